namespace Capsule.Core.Tests;

public class TranslationTableTests
{
    // Hosts h1 (10.0.0.1), h2 (10.0.0.2), h3 (10.0.0.3).
    // Running: a, c on h1; b on h2; f on h3.
    // Not running: d (Creating, h2), e (Suspended, h2), g (Stopped, h1), m (Migrating, h2).
    static readonly DirectoryState State = Build();
    static readonly TranslationTable T1 = TranslationTable.From(State, "h1");
    static readonly TranslationTable T2 = TranslationTable.From(State, "h2");

    static DirectoryState Build()
    {
        var s = Dir.WithHosts(null, Dir.H1, Dir.H2, Dir.H3);
        foreach (var (n, h) in new[] { ("a", "h1"), ("b", "h2"), ("c", "h1"), ("d", "h2"), ("e", "h2"), ("f", "h3"),
            ("g", "h1"), ("m", "h1") })
            s = s.AllocateCapsule(n, h).Ok();
        foreach (var (n, h) in new[] { ("a", "h1"), ("b", "h2"), ("c", "h1"), ("f", "h3"), ("g", "h1") })
            s = s.UpdateRead(n, h, CapsuleState.Running).Ok();
        s = s.UpdateRead("e", "h2", CapsuleState.Suspended).Ok();
        s = s.UpdateRead("g", "h1", CapsuleState.Stopped).Ok();
        s = s.UpdateRead("m", "h2", CapsuleState.Migrating).Ok();
        return s;
    }

    static Locator L(string capsule) => State.Capsules[capsule].Locator;
    static readonly Locator H1 = Dir.H1.Underlay, H2 = Dir.H2.Underlay, H3 = Dir.H3.Underlay;
    static readonly Locator Stranger = Locator.Parse("10.9.9.9");

    // ---- the table itself ----

    [Fact]
    public void Table_knows_self_epoch_and_remote_running_capsules()
    {
        Assert.Equal(H1, T1.Self);
        Assert.Equal((uint)State.Revision, T1.Epoch);
        Assert.Equal(2, T1.Count); // b and f
        Assert.True(T1.TryGetHost(L("b"), out var hb));
        Assert.Equal(H2, hb);
        Assert.True(T1.TryGetHost(L("f"), out var hf));
        Assert.Equal(H3, hf);
        Assert.True(T1.IsLocal(L("a")));
        Assert.True(T1.IsLocal(L("c")));
        Assert.False(T1.IsLocal(L("b")));
        Assert.False(T1.TryGetHost(L("a"), out _)); // local ones are not in the remote map
    }

    [Fact]
    public void Known_hosts_are_the_others_not_self()
    {
        Assert.True(T1.IsKnownHost(H2));
        Assert.True(T1.IsKnownHost(H3));
        Assert.False(T1.IsKnownHost(H1));
        Assert.False(T1.IsKnownHost(Stranger));
        Assert.True(T2.IsKnownHost(H1));
        Assert.False(T2.IsKnownHost(H2));
    }

    [Theory]
    [InlineData("d")] // Creating
    [InlineData("e")] // Suspended
    [InlineData("g")] // Stopped
    [InlineData("m")] // Migrating
    public void Non_running_capsules_do_not_route(string capsule)
    {
        foreach (var t in new[] { T1, T2, TranslationTable.From(State, "h3") })
        {
            Assert.False(t.IsLocal(L(capsule)));
            Assert.False(t.TryGetHost(L(capsule), out _));
        }
    }

    [Fact]
    public void Epoch_is_low_32_bits_of_revision()
    {
        var s = new DirectoryState(Dir.Pool, 0x1_0000_0005L, State.Hosts, State.Capsules);
        Assert.Equal(5u, TranslationTable.From(s, "h1").Epoch);
    }

    [Fact]
    public void Unknown_self_gets_no_address_and_no_local_capsules()
    {
        var t = TranslationTable.From(State, "h9");
        Assert.True(t.Self.IsNone);
        Assert.False(t.IsLocal(L("a")));
        Assert.True(t.IsKnownHost(H1));
        Assert.Equal(4, t.Count); // a, c, b, f are all remote to it
    }

    [Fact]
    public void Empty_table_routes_nothing()
    {
        var t = TranslationTable.Empty;
        Assert.Equal(0, t.Count);
        Assert.False(t.IsKnownHost(H1));
        Assert.Equal(DropReason.SpoofedSource, Forwarding.Outbound(t, Packets.Build(L("a"), L("b")), out _));
        Assert.Equal(DropReason.UnknownHost,
            Forwarding.Inbound(t, H2, Packets.Wrap(Packets.Build(L("b"), L("a"))), out _));
    }

    [Fact]
    public void Migration_moves_the_route()
    {
        var s = State.UpdateRead("b", "h3", CapsuleState.Running).Ok();
        var t = TranslationTable.From(s, "h1");
        Assert.True(t.TryGetHost(L("b"), out var h));
        Assert.Equal(H3, h);
        var t3 = TranslationTable.From(s, "h3");
        Assert.True(t3.IsLocal(L("b")));
    }

    // ---- outbound ----

    [Fact]
    public void Outbound_local_to_remote_goes_to_that_host()
    {
        Assert.Equal(DropReason.None, Forwarding.Outbound(T1, Packets.Build(L("a"), L("b")), out var to));
        Assert.Equal(H2, to);
        Assert.Equal(DropReason.None, Forwarding.Outbound(T1, Packets.Build(L("c"), L("f")), out to));
        Assert.Equal(H3, to);
        Assert.Equal(DropReason.None, Forwarding.Outbound(T2, Packets.Build(L("b"), L("a")), out to));
        Assert.Equal(H1, to);
    }

    [Fact]
    public void Outbound_forged_source_is_spoofed()
    {
        Assert.Equal(DropReason.SpoofedSource,
            Forwarding.Outbound(T1, Packets.Build(L("b"), L("f")), out var to)); // b lives on h2
        Assert.True(to.IsNone);
        Assert.Equal(DropReason.SpoofedSource,
            Forwarding.Outbound(T1, Packets.Build(Locator.Parse("100.64.200.1"), L("b")), out _));
        Assert.Equal(DropReason.SpoofedSource, Forwarding.Outbound(T1, Packets.Build(H1, L("b")), out _));
        // A capsule that is not running may not send either.
        Assert.Equal(DropReason.SpoofedSource, Forwarding.Outbound(T2, Packets.Build(L("d"), L("a")), out _));
        Assert.Equal(DropReason.SpoofedSource, Forwarding.Outbound(T2, Packets.Build(L("e"), L("a")), out _));
    }

    [Fact]
    public void Outbound_unknown_destination_is_no_route()
    {
        Assert.Equal(DropReason.NoRoute,
            Forwarding.Outbound(T1, Packets.Build(L("a"), Locator.Parse("100.64.200.1")), out var to));
        Assert.True(to.IsNone);
        Assert.Equal(DropReason.NoRoute,
            Forwarding.Outbound(T1, Packets.Build(L("a"), Locator.Parse("8.8.8.8")), out _));
        Assert.Equal(DropReason.NoRoute, Forwarding.Outbound(T1, Packets.Build(L("a"), L("d")), out _)); // Creating
        Assert.Equal(DropReason.NoRoute, Forwarding.Outbound(T1, Packets.Build(L("a"), L("e")), out _)); // Suspended
        Assert.Equal(DropReason.NoRoute, Forwarding.Outbound(T1, Packets.Build(L("a"), L("m")), out _)); // Migrating
    }

    [Fact]
    public void Outbound_bad_packet_is_bad_inner_packet()
    {
        var p = Packets.Build(L("a"), L("b"));
        p[0] = 0x65;
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Outbound(T1, p, out _));
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Outbound(T1, [], out _));
        Assert.Equal(DropReason.BadInnerPacket,
            Forwarding.Outbound(T1, Packets.Build(L("a"), L("b")).AsSpan(0, 25), out _));
        // Validity is checked before the (forged) source.
        var q = Packets.Build(Stranger, L("b"));
        q[3]++;
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Outbound(T1, q, out _));
    }

    // ---- inbound ----

    [Fact]
    public void Inbound_good_datagram_yields_the_original_packet()
    {
        var inner = Packets.Build(L("b"), L("a"), payload: 37);
        var d = Packets.Wrap(inner, T1.Epoch);
        Assert.Equal(DropReason.None, Forwarding.Inbound(T1, H2, d, out var range));
        Assert.Equal(inner, d[range]);
        Assert.Equal(Wire.HeaderSize, range.Start.GetOffset(d.Length));
        Assert.Equal(d.Length, range.End.GetOffset(d.Length));

        var inner2 = Packets.Build(L("f"), L("c"));
        var d2 = Packets.Wrap(inner2, 12345); // epoch is not checked
        Assert.Equal(DropReason.None, Forwarding.Inbound(T1, H3, d2, out range));
        Assert.Equal(inner2, d2[range]);
    }

    [Fact]
    public void Inbound_unknown_sender_is_checked_before_anything_else()
    {
        var good = Packets.Wrap(Packets.Build(L("b"), L("a")));
        Assert.Equal(DropReason.UnknownHost, Forwarding.Inbound(T1, Stranger, good, out var range));
        Assert.Equal(default, range);
        Assert.Equal(DropReason.UnknownHost, Forwarding.Inbound(T1, Stranger, [], out _));
        Assert.Equal(DropReason.UnknownHost, Forwarding.Inbound(T1, Stranger, [1, 2, 3], out _));
        Assert.Equal(DropReason.UnknownHost,
            Forwarding.Inbound(T1, Stranger, new byte[] { 0xCA, 9, 9, 9, 0, 0, 0, 0 }, out _));
        // Our own address is not a peer either.
        Assert.Equal(DropReason.UnknownHost, Forwarding.Inbound(T1, H1, good, out _));
        Assert.Equal(DropReason.UnknownHost, Forwarding.Inbound(T1, Locator.None, good, out _));
    }

    [Fact]
    public void Inbound_malformed_header()
    {
        var inner = Packets.Build(L("b"), L("a"));
        Assert.Equal(DropReason.Malformed, Forwarding.Inbound(T1, H2, [], out _));
        Assert.Equal(DropReason.Malformed, Forwarding.Inbound(T1, H2, [0xCA, 1, 1], out _));
        Assert.Equal(DropReason.Malformed, Forwarding.Inbound(T1, H2, inner, out _)); // not wrapped at all

        var d = Packets.Wrap(inner);
        d[0] = 0xCB;
        Assert.Equal(DropReason.Malformed, Forwarding.Inbound(T1, H2, d, out _));
        d = Packets.Wrap(inner);
        d[1] = 1;
        Assert.Equal(DropReason.BadVersion, Forwarding.Inbound(T1, H2, d, out _));
        d = Packets.Wrap(inner);
        d[2] = 2;
        Assert.Equal(DropReason.Malformed, Forwarding.Inbound(T1, H2, d, out _));
        d = Packets.Wrap(inner);
        d[3] = 3;
        Assert.Equal(DropReason.Malformed, Forwarding.Inbound(T1, H2, d, out var range));
        Assert.Equal(default, range);
    }

    [Fact]
    public void Inbound_bad_inner_packet()
    {
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Inbound(T1, H2, Packets.Wrap([]), out _));
        var inner = Packets.Build(L("b"), L("a"));
        inner[0] = 0x44;
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Inbound(T1, H2, Packets.Wrap(inner), out _));
        var good = Packets.Wrap(Packets.Build(L("b"), L("a")));
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Inbound(T1, H2, good.AsSpan(0, good.Length - 1), out _));
        var padded = new byte[good.Length + 3];
        good.CopyTo(padded, 0);
        Assert.Equal(DropReason.BadInnerPacket, Forwarding.Inbound(T1, H2, padded, out _));
    }

    [Fact]
    public void Inbound_for_a_capsule_not_local_is_refused()
    {
        Assert.Equal(DropReason.NotLocalCapsule,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("b"), L("f"))), out _)); // f is on h3
        Assert.Equal(DropReason.NotLocalCapsule,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("b"), L("b"))), out _));
        Assert.Equal(DropReason.NotLocalCapsule,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("b"), Locator.Parse("100.64.200.1"))), out _));
        Assert.Equal(DropReason.NotLocalCapsule,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("b"), L("g"))), out _)); // Stopped on h1
        Assert.Equal(DropReason.NotLocalCapsule,
            Forwarding.Inbound(T2, H1, Packets.Wrap(Packets.Build(L("a"), L("d"))), out _)); // Creating on h2
        Assert.Equal(DropReason.NotLocalCapsule,
            Forwarding.Inbound(T2, H1, Packets.Wrap(Packets.Build(L("a"), L("e"))), out _)); // Suspended on h2
    }

    [Fact]
    public void Inbound_source_not_on_sending_host_is_a_mismatch()
    {
        // f lives on h3, but h2 sent it.
        Assert.Equal(DropReason.SourceHostMismatch,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("f"), L("a"))), out var range));
        Assert.Equal(default, range);
        // A locator nobody holds.
        Assert.Equal(DropReason.SourceHostMismatch,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(Locator.Parse("100.64.200.1"), L("a"))), out _));
        // One of our own local capsules, claimed by a peer.
        Assert.Equal(DropReason.SourceHostMismatch,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("c"), L("a"))), out _));
        // A capsule of the sender that is not running.
        Assert.Equal(DropReason.SourceHostMismatch,
            Forwarding.Inbound(T1, H2, Packets.Wrap(Packets.Build(L("d"), L("a"))), out _));
    }

    [Fact]
    public void Outbound_then_inbound_round_trip_between_hosts()
    {
        var inner = Packets.Build(L("a"), L("b"), payload: 64);
        Assert.Equal(DropReason.None, Forwarding.Outbound(T1, inner, out var to));
        var d = Packets.Wrap(inner, T1.Epoch);
        var receiver = TranslationTable.From(State, State.Hosts.Values.Single(h => h.Underlay == to).Name);
        Assert.Equal(DropReason.None, Forwarding.Inbound(receiver, T1.Self, d, out var range));
        Assert.Equal(inner, d[range]);
    }

    [Fact]
    public void Property_inbound_never_throws_on_arbitrary_bytes_from_a_known_host()
    {
        var good = Packets.Wrap(Packets.Build(L("b"), L("a")));
        var gen = Gen.OneOf(
            Gen.Byte.Array[0, 80],
            // a valid overlay header then random bytes
            Gen.Byte.Array[0, 60].Select(a =>
            {
                var d = new byte[Wire.HeaderSize + a.Length];
                Wire.WriteHeader(d, Wire.Kind.Ipv4, 1);
                a.CopyTo(d, Wire.HeaderSize);
                return d;
            }),
            // a good datagram with a few bytes flipped and maybe truncated
            Gen.Select(Gen.Int[0, good.Length - 1].Array[0, 4], Gen.Byte, Gen.Int[0, good.Length], (idx, v, len) =>
            {
                var d = good.ToArray();
                foreach (var i in idx) d[i] ^= (byte)(v | 1);
                return d[..len];
            }));
        var senders = Gen.OneOf(H2, H3);
        Gen.Select(gen, senders).Sample((d, from) =>
        {
            var r = Forwarding.Inbound(T1, from, d, out var range);
            Assert.NotEqual(DropReason.UnknownHost, r);
            if (r == DropReason.None)
            {
                var inner = d[range];
                Assert.True(Ipv4.IsValid(inner));
                Assert.True(T1.IsLocal(Ipv4.Destination(inner)));
                Assert.True(T1.TryGetHost(Ipv4.Source(inner), out var h) && h == from);
            }
            else Assert.Equal(default, range);
        }, iter: 20_000);
    }

    [Fact]
    public void Property_outbound_never_throws_and_only_routes_local_to_remote()
    {
        Gen.Byte.Array[0, 60].Sample(p =>
        {
            var r = Forwarding.Outbound(T1, p, out var to);
            if (r == DropReason.None)
            {
                Assert.True(T1.IsLocal(Ipv4.Source(p)));
                Assert.True(to == H2 || to == H3);
            }
            else Assert.True(to.IsNone);
        }, iter: 10_000);
    }
}
