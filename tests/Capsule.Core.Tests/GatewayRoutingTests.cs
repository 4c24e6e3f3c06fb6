namespace Capsule.Core.Tests;

public class GatewayRoutingTests
{
    // Hosts h1 (10.0.0.1), h2 (10.0.0.2) and a gateway gw (10.0.0.9) serving 198.51.100.0/24.
    // Running: a on h1, b on h2.  Not running: s (Suspended, was on h2).
    static readonly HostRecord GwRecord = new("gw", Locator.Parse("10.0.0.9"), "10.0.0.9:7471", "198.51.100.0/24");
    static readonly DirectoryState State = Build(GwRecord);
    static readonly TranslationTable T1 = TranslationTable.From(State, "h1");
    static readonly TranslationTable T2 = TranslationTable.From(State, "h2");
    static readonly TranslationTable TG = TranslationTable.From(State, "gw");

    static DirectoryState Build(params HostRecord[] gateways)
    {
        var s = Dir.WithHosts(null, [Dir.H1, Dir.H2, .. gateways]);
        s = s.AllocateCapsule("a", "h1").Ok();
        s = s.AllocateCapsule("b", "h2").Ok();
        s = s.AllocateCapsule("s", "h2").Ok();
        s = s.UpdateRead("a", "h1", CapsuleState.Running).Ok();
        s = s.UpdateRead("b", "h2", CapsuleState.Running).Ok();
        s = s.UpdateRead("s", "h2", CapsuleState.Suspended).Ok();
        return s;
    }

    static Locator L(string capsule) => State.Capsules[capsule].Locator;
    static Locator A(string text) => Locator.Parse(text);
    static readonly Locator H1 = Dir.H1.Underlay, H2 = Dir.H2.Underlay, GW = GwRecord.Underlay;
    static readonly Locator Ordinary = A("198.51.100.11");
    static readonly Locator Outside = A("198.51.101.11");
    static readonly Locator Nobody = A("100.64.200.1");

    static DropReason In(TranslationTable t, Locator from, Locator src, Locator dst) =>
        Forwarding.Inbound(t, from, Packets.Wrap(Packets.Build(src, dst)), out _);

    static DropReason Out(TranslationTable t, Locator src, Locator dst, out Locator to) =>
        Forwarding.Outbound(t, Packets.Build(src, dst), out to);

    // ---- the records and tables ----

    [Fact]
    public void Gateway_record_and_tables()
    {
        Assert.True(GwRecord.IsGateway);
        Assert.False(Dir.H1.IsGateway);
        Assert.Equal([Prefix.Parse("198.51.100.0/24")], GwRecord.ServedPrefixes);
        Assert.Empty(Dir.H1.ServedPrefixes);

        Assert.True(TG.IsGateway);
        Assert.False(T1.IsGateway);
        Assert.False(T2.IsGateway);
        Assert.Equal(GW, TG.Self);
        Assert.True(T1.IsKnownHost(GW));
        Assert.True(TG.IsKnownHost(H1));
        Assert.True(TG.IsKnownHost(H2));
        Assert.False(TG.IsKnownHost(GW));
    }

    [Fact]
    public void Only_the_gateway_serves_its_prefix()
    {
        Assert.True(TG.Serves(Ordinary));
        Assert.True(TG.Serves(A("198.51.100.0")));
        Assert.True(TG.Serves(A("198.51.100.255")));
        Assert.False(TG.Serves(A("198.51.99.255")));
        Assert.False(TG.Serves(A("198.51.101.0")));
        Assert.False(TG.Serves(L("a")));
        Assert.False(T1.Serves(Ordinary));
        Assert.False(T2.Serves(Ordinary));
        Assert.False(TranslationTable.Empty.Serves(Ordinary));
        Assert.False(TranslationTable.Empty.IsGateway);
    }

    [Fact]
    public void Served_addresses_route_to_the_gateway_but_are_not_capsules()
    {
        foreach (var t in new[] { T1, T2 })
        {
            Assert.True(t.TryRoute(Ordinary, out var h));
            Assert.Equal(GW, h);
            Assert.True(t.TryRoute(A("198.51.100.0"), out h));
            Assert.Equal(GW, h);
            Assert.True(t.TryRoute(A("198.51.100.255"), out h));
            Assert.Equal(GW, h);
            Assert.False(t.TryRoute(A("198.51.99.255"), out h));
            Assert.True(h.IsNone);
            Assert.False(t.TryRoute(A("198.51.101.0"), out _));
            Assert.False(t.TryGetHost(Ordinary, out _)); // TryGetHost is capsules only
            Assert.False(t.IsLocal(Ordinary));
        }
        Assert.Equal(1, T1.Count); // b only: served addresses are not entries
    }

    [Fact]
    public void Capsule_routes_are_unchanged_by_the_gateway()
    {
        Assert.True(T1.TryRoute(L("b"), out var h));
        Assert.Equal(H2, h);
        Assert.True(TG.TryRoute(L("a"), out h));
        Assert.Equal(H1, h);
        Assert.True(TG.TryRoute(L("b"), out h));
        Assert.Equal(H2, h);
        Assert.False(TG.IsLocal(L("a")));
        Assert.Equal(2, TG.Count);
    }

    // ---- outbound ----

    [Fact]
    public void Capsule_to_ordinary_host_goes_to_the_gateway()
    {
        Assert.Equal(DropReason.None, Out(T1, L("a"), Ordinary, out var to));
        Assert.Equal(GW, to);
        Assert.Equal(DropReason.None, Out(T2, L("b"), A("198.51.100.254"), out to));
        Assert.Equal(GW, to);
        Assert.Equal(DropReason.NoRoute, Out(T1, L("a"), Outside, out to));
        Assert.True(to.IsNone);
    }

    [Fact]
    public void Ordinary_host_to_capsule_goes_from_gateway_to_the_capsules_host()
    {
        Assert.Equal(DropReason.None, Out(TG, Ordinary, L("b"), out var to));
        Assert.Equal(H2, to);
        Assert.Equal(DropReason.None, Out(TG, A("198.51.100.1"), L("a"), out to));
        Assert.Equal(H1, to);
    }

    [Fact]
    public void Gateway_refuses_sources_outside_what_it_serves()
    {
        foreach (var src in new[] { Outside, A("198.51.99.255"), L("a"), L("b"), GW, H1, Nobody, Locator.None })
        {
            Assert.Equal(DropReason.SpoofedSource, Out(TG, src, L("b"), out var to));
            Assert.True(to.IsNone);
        }
    }

    [Fact]
    public void A_host_may_not_send_as_an_ordinary_address()
    {
        // Only the gateway speaks for 198.51.100.0/24.
        Assert.Equal(DropReason.SpoofedSource, Out(T1, Ordinary, L("b"), out _));
        Assert.Equal(DropReason.SpoofedSource, Out(T2, Ordinary, L("a"), out _));
    }

    [Fact]
    public void Gateway_has_no_route_for_an_unknown_locator()
    {
        Assert.Equal(DropReason.NoRoute, Out(TG, Ordinary, Nobody, out var to));
        Assert.True(to.IsNone);
        Assert.Equal(DropReason.NoRoute, Out(TG, Ordinary, L("s"), out _)); // suspended: no live destination
        Assert.Equal(DropReason.NoRoute, Out(TG, Ordinary, Outside, out _));
        // Its own network is never sent into the overlay (it would come straight back).
        Assert.Equal(DropReason.NoRoute, Out(TG, Ordinary, A("198.51.100.12"), out _));
        Assert.Equal(DropReason.NoRoute, Out(T1, L("a"), Nobody, out _));
    }

    // ---- inbound ----

    [Fact]
    public void Host_accepts_an_ordinary_source_from_the_gateway()
    {
        var inner = Packets.Build(Ordinary, L("a"), payload: 20);
        var d = Packets.Wrap(inner, TG.Epoch);
        Assert.Equal(DropReason.None, Forwarding.Inbound(T1, GW, d, out var range));
        Assert.Equal(inner, d[range]);
        Assert.Equal(DropReason.None, In(T2, GW, A("198.51.100.200"), L("b")));
    }

    [Fact]
    public void Host_refuses_an_ordinary_source_from_anyone_but_its_gateway()
    {
        Assert.Equal(DropReason.SourceHostMismatch,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(Ordinary, L("a"))), out var range));
        Assert.Equal(default, range);
        // And from the gateway, only sources it serves or... nothing else.
        Assert.Equal(DropReason.SourceHostMismatch, In(T1, GW, Outside, L("a")));
        Assert.Equal(DropReason.SourceHostMismatch, In(T1, GW, L("b"), L("a")));  // b is h2's
        Assert.Equal(DropReason.SourceHostMismatch, In(T1, GW, Nobody, L("a")));
        // The destination is checked too.
        Assert.Equal(DropReason.NotLocalCapsule, In(T1, GW, Ordinary, L("b")));
        Assert.Equal(DropReason.NotLocalCapsule, In(T1, GW, Ordinary, A("198.51.100.12")));
    }

    [Fact]
    public void Gateway_accepts_capsule_traffic_for_addresses_it_serves()
    {
        var inner = Packets.Build(L("a"), Ordinary, payload: 33);
        var d = Packets.Wrap(inner);
        Assert.Equal(DropReason.None, Forwarding.Inbound(TG, H1, d, out var range));
        Assert.Equal(inner, d[range]);
        Assert.Equal(DropReason.None, In(TG, H2, L("b"), A("198.51.100.255")));
    }

    [Fact]
    public void Gateway_refuses_what_it_does_not_serve_or_what_the_sender_cannot_send()
    {
        Assert.Equal(DropReason.NotLocalCapsule, In(TG, H1, L("a"), Outside));
        Assert.Equal(DropReason.NotLocalCapsule, In(TG, H1, L("a"), L("b")));
        Assert.Equal(DropReason.NotLocalCapsule, In(TG, H1, L("a"), Nobody));
        Assert.Equal(DropReason.SourceHostMismatch, In(TG, H2, L("a"), Ordinary));        // a is on h1
        Assert.Equal(DropReason.SourceHostMismatch,
            In(TG, H1, A("198.51.100.12"), Ordinary)); // h1 claims an ordinary address
        Assert.Equal(DropReason.SourceHostMismatch, In(TG, H1, Nobody, Ordinary));
        Assert.Equal(DropReason.UnknownHost, In(TG, A("10.9.9.9"), L("a"), Ordinary));
        Assert.Equal(DropReason.UnknownHost, In(TG, GW, L("a"), Ordinary));
    }

    [Fact]
    public void Round_trip_ordinary_host_to_capsule_and_back()
    {
        // Ordinary -> b: the gateway sends it to h2, which accepts it from the gateway.
        var req = Packets.Build(Ordinary, L("b"), payload: 40);
        Assert.Equal(DropReason.None, Forwarding.Outbound(TG, req, out var to));
        Assert.Equal(DropReason.None,
            Forwarding.Inbound(TranslationTable.From(State, HostAt(to)), TG.Self, Packets.Wrap(req), out _));
        // b -> Ordinary: h2 sends it to the gateway, which accepts it from h2.
        var resp = Packets.Build(L("b"), Ordinary, payload: 40);
        Assert.Equal(DropReason.None, Forwarding.Outbound(T2, resp, out to));
        Assert.Equal(DropReason.None,
            Forwarding.Inbound(TranslationTable.From(State, HostAt(to)), T2.Self, Packets.Wrap(resp), out _));
    }

    static string HostAt(Locator underlay) => State.Hosts.Values.Single(h => h.Underlay == underlay).Name;

    // ---- several prefixes, several gateways ----

    [Theory]
    [InlineData("198.51.100.0/24,203.0.113.0/25")]
    [InlineData("198.51.100.0/24, 203.0.113.0/25")]
    [InlineData(" 198.51.100.0/24 , 203.0.113.0/25 ,")]
    public void Gateway_with_two_prefixes_serves_both(string serves)
    {
        var gw = GwRecord with { Serves = serves };
        Assert.Equal([Prefix.Parse("198.51.100.0/24"), Prefix.Parse("203.0.113.0/25")], gw.ServedPrefixes);
        var s = Build(gw);
        var t1 = TranslationTable.From(s, "h1");
        var tg = TranslationTable.From(s, "gw");
        var a = s.Capsules["a"].Locator;
        var second = A("203.0.113.5");
        var notServed = A("203.0.113.200"); // the other half of that /24

        foreach (var dst in new[] { Ordinary, second, A("203.0.113.127") })
        {
            Assert.Equal(DropReason.None, Out(t1, a, dst, out var to));
            Assert.Equal(GW, to);
            Assert.True(tg.Serves(dst));
            Assert.Equal(DropReason.None, In(tg, H1, a, dst));
            Assert.Equal(DropReason.None, Out(tg, dst, a, out to));
            Assert.Equal(H1, to);
            Assert.Equal(DropReason.None, In(t1, GW, dst, a));
        }
        Assert.Equal(DropReason.NoRoute, Out(t1, a, notServed, out _));
        Assert.False(tg.Serves(notServed));
        Assert.Equal(DropReason.SpoofedSource, Out(tg, notServed, a, out _));
        Assert.Equal(DropReason.NotLocalCapsule, In(tg, H1, a, notServed));
        Assert.Equal(DropReason.SourceHostMismatch, In(t1, GW, notServed, a));
    }

    [Fact]
    public void Two_gateways_each_get_their_own_network()
    {
        var gw2 = new HostRecord("gw2", A("10.0.0.10"), "10.0.0.10:7471", "192.0.2.0/24");
        var s = Build(GwRecord, gw2);
        var t1 = TranslationTable.From(s, "h1");
        var tg = TranslationTable.From(s, "gw");
        var tg2 = TranslationTable.From(s, "gw2");
        var a = s.Capsules["a"].Locator;
        var behind2 = A("192.0.2.7");

        Assert.Equal(DropReason.None, Out(t1, a, Ordinary, out var to));
        Assert.Equal(GW, to);
        Assert.Equal(DropReason.None, Out(t1, a, behind2, out to));
        Assert.Equal(gw2.Underlay, to);
        Assert.True(tg2.IsGateway);
        Assert.False(tg2.Serves(Ordinary));
        Assert.False(tg.Serves(behind2));
        // From one ordinary network to the other, through both gateways.
        Assert.Equal(DropReason.None, Out(tg, Ordinary, behind2, out to));
        Assert.Equal(gw2.Underlay, to);
        Assert.Equal(DropReason.None, In(tg2, GW, Ordinary, behind2));
        // Neither gateway may speak for the other's network.
        Assert.Equal(DropReason.SpoofedSource, Out(tg, behind2, a, out _));
        Assert.Equal(DropReason.SourceHostMismatch, In(t1, GW, behind2, a));
        Assert.Equal(DropReason.SourceHostMismatch, In(tg2, GW, behind2, behind2));
    }

    [Fact]
    public void Removing_the_gateway_removes_its_routes()
    {
        var s = State.DeleteHost("gw").Ok();
        var t1 = TranslationTable.From(s, "h1");
        Assert.False(t1.TryRoute(Ordinary, out _));
        Assert.Equal(DropReason.NoRoute, Out(t1, L("a"), Ordinary, out _));
        Assert.Equal(DropReason.UnknownHost, In(t1, GW, Ordinary, L("a")));
    }

    [Fact]
    public void Gateway_that_stops_serving_is_an_ordinary_host_again()
    {
        var s = State.PutHost(GwRecord with { Serves = "" }).Ok();
        var tg = TranslationTable.From(s, "gw");
        Assert.False(tg.IsGateway);
        Assert.False(tg.Serves(Ordinary));
        Assert.Equal(DropReason.SpoofedSource, Out(tg, Ordinary, L("a"), out _));
        Assert.Equal(DropReason.NoRoute, Out(TranslationTable.From(s, "h1"), L("a"), Ordinary, out _));
    }

    // ---- pins ----

    [Fact]
    public void Pins_move_capsules_but_leave_gateway_routes_alone()
    {
        // b is moving from h2 to h1: h1 and the gateway have the pin before the directory says so.
        var pins = new Dictionary<Locator, Locator> { [L("b")] = H1 };
        var t1 = TranslationTable.From(State, "h1", pins);
        var tg = TranslationTable.From(State, "gw", pins);

        Assert.True(t1.IsLocal(L("b")));
        Assert.True(tg.TryRoute(L("b"), out var h));
        Assert.Equal(H1, h);
        Assert.Equal(DropReason.None, Out(tg, Ordinary, L("b"), out var to));
        Assert.Equal(H1, to);
        Assert.Equal(DropReason.None, In(t1, GW, Ordinary, L("b")));
        // The moved capsule reaches the ordinary network from its new host.
        Assert.Equal(DropReason.None, Out(t1, L("b"), Ordinary, out to));
        Assert.Equal(GW, to);
        Assert.Equal(DropReason.None, In(tg, H1, L("b"), Ordinary));
        Assert.Equal(DropReason.SourceHostMismatch, In(tg, H2, L("b"), Ordinary));
        Assert.True(t1.TryRoute(Ordinary, out h));
        Assert.Equal(GW, h);
    }

    [Fact]
    public void A_capsule_route_wins_over_a_prefix_route()
    {
        // Exact routes are looked up first: a pin for an address inside a served prefix sends it to the pinned host.
        var pins = new Dictionary<Locator, Locator> { [Ordinary] = H2 };
        var t1 = TranslationTable.From(State, "h1", pins);
        Assert.True(t1.TryRoute(Ordinary, out var h));
        Assert.Equal(H2, h);
        Assert.True(t1.TryRoute(A("198.51.100.12"), out h));
        Assert.Equal(GW, h);
    }

    // ---- robustness ----

    [Fact]
    public void A_malformed_serves_never_breaks_other_hosts_tables()
    {
        foreach (var bad in new[] { "198.51.100.0/33", "not-a-prefix", "198.51.100.1/24" })
        {
            var r = State.PutHost(GwRecord with { Serves = bad });
            if (!r.Ok) continue; // refusing it at the directory is one acceptable fix
            var ex = Record.Exception(() => TranslationTable.From(r.State, "h1"));
            Assert.Null(ex);
        }
    }

    [Fact]
    public void Property_gateway_routing_decisions_are_consistent()
    {
        var addr = Gen.OneOf(
            Gen.Int[0, 255].Select(i => new Locator(Ordinary.Value & 0xFFFFFF00 | (uint)i)),
            Gen.Int[0, 255].Select(i => new Locator(Outside.Value & 0xFFFFFF00 | (uint)i)),
            Gen.OneOf(Gen.Const(L("a")), Gen.Const(L("b")), Gen.Const(L("s")), Gen.Const(Nobody)),
            Gen.UInt.Select(v => new Locator(v)));
        var tables = new[] { T1, T2, TG };
        Gen.Select(addr, addr, Gen.Int[0, 2], Gen.Int[0, 2]).Sample((src, dst, ti, fi) =>
        {
            var t = tables[ti];
            var r = Out(t, src, dst, out var to);
            if (r == DropReason.None)
            {
                Assert.True(t.IsLocal(src) || t.Serves(src));
                Assert.NotEqual(t.Self, to);
                // What one host sends, the receiver accepts.
                var rt = tables.Single(x => x.Self == to);
                Assert.Equal(DropReason.None, In(rt, t.Self, src, dst));
            }
            else Assert.True(to.IsNone);

            var from = tables[fi].Self;
            var ri = In(t, from, src, dst);
            if (ri == DropReason.None)
            {
                Assert.NotEqual(t.Self, from);
                Assert.True(t.IsLocal(dst) || t.Serves(dst));
                Assert.True(t.TryRoute(src, out var sh) && sh == from);
            }
        }, iter: 10_000);
    }
}
