using System.Buffers.Binary;

namespace Capsule.Core.Tests;

/// <summary>
/// Fuzzing of everything the data plane parses from outside (issue 10, item 7): the overlay header, the
/// inner IPv4 packet, TCP and the ICMP answer's reading of the packet it answers, driven through the real
/// per-packet decisions (<see cref="Forwarding"/>) and counted as the engine counts them. Inputs of up to
/// ~2000 bytes (past the 1500-byte MTU the engine reads), truncations at every length, single-byte flips
/// and extreme length fields. A packet parser has no error type: whatever it is given, it answers with a
/// drop reason (or false / 0), never an exception.
/// </summary>
public class ParserFuzzTests
{
    // h1 and h2 each run a capsule; gw (a gateway) serves 198.51.100.0/24.
    static readonly HostRecord Gw = new("gw", Locator.Parse("10.0.0.9"), "10.0.0.9:7471", "198.51.100.0/24");
    static readonly DirectoryState State = Build();
    static readonly TranslationTable T1 = TranslationTable.From(State, "h1");
    static readonly TranslationTable T2 = TranslationTable.From(State, "h2");
    static readonly TranslationTable TG = TranslationTable.From(State, "gw");
    static readonly TranslationTable[] Tables = [T1, T2, TG];
    static readonly Locator A = State.Capsules["a"].Locator, B = State.Capsules["b"].Locator;
    static readonly Locator H1 = Dir.H1.Underlay, H2 = Dir.H2.Underlay, GwAddr = Gw.Underlay;
    static readonly Locator Stranger = Locator.Parse("10.9.9.9");

    static DirectoryState Build()
    {
        var s = Dir.WithHosts(null, [Dir.H1, Dir.H2, Gw]);
        s = s.AllocateCapsule("a", "h1").Ok();
        s = s.AllocateCapsule("b", "h2").Ok();
        s = s.UpdateRead("a", "h1", CapsuleState.Running).Ok();
        return s.UpdateRead("b", "h2", CapsuleState.Running).Ok();
    }

    /// <summary>Valid inner packets a → b of every kind the data plane meets: UDP, TCP with options, ICMP.</summary>
    static readonly Gen<byte[]> ValidInner = Gen.OneOf(
        Gen.Int[0, 1472].Select(n => Packets.Build(A, B, n)),
        Gen.Select(Gen.UInt, Gen.UInt, Gen.Int[0, 1400], Gen.Int[0, 10]).Select((seq, ack, n, ipOpt) =>
            Inet.Tcp(A, 40000, B, 80, seq, ack, Tcp.ACK | Tcp.PSH, 512, Inet.TsOption(seq, ack),
                Inet.Pattern(n), ipOptionWords: ipOpt)),
        Gen.Int[0, 1400].Select(n => Inet.Ip(A, B, 1, [8, 0, 0, 0, .. Inet.Pattern(n)])));

    /// <summary>
    /// Mutations of a valid packet: cut at any length, one byte changed, or a length field (IPv4 total length,
    /// IHL, TCP data offset) set to an extreme.
    /// </summary>
    static Gen<byte[]> Mutated(Gen<byte[]> valid) => Gen.OneOf(
        Gen.Select(valid, Gen.Int[0, 1 << 20]).Select((p, at) => p[..(at % p.Length)]),
        Gen.Select(valid, Gen.Int[0, 1 << 20], Gen.Byte[1, 255]).Select((p, at, x) =>
        {
            var d = p.ToArray();
            d[at % d.Length] ^= x;
            return d;
        }),
        Gen.Select(valid, Gen.OneOf<ushort>(0, 1, 19, 20, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)).Select((p, v) =>
        {
            var d = p.ToArray();
            BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(2), v);
            return d;
        }),
        Gen.Select(valid, Gen.Int[0, 15]).Select((p, ihl) =>
        {
            var d = p.ToArray();
            d[0] = (byte)(0x40 | ihl);
            return d;
        }),
        Gen.Select(valid, Gen.Int[0, 15]).Select((p, doff) =>
        {
            // The TCP data offset where a TCP header would be, whatever the protocol: all 16 values.
            var d = p.ToArray();
            var at = Inet.Ihl(d) + 12;
            if (at < d.Length) d[at] = (byte)(doff << 4);
            return d;
        }));

    static readonly Gen<byte[]> AnyInner = Gen.OneOf(Gen.Byte.Array[0, 2000], ValidInner, Mutated(ValidInner));

    static byte[] Wrap(byte[] inner) => Packets.Wrap(inner, 7);

    static readonly Gen<byte[]> AnyDatagram = Gen.OneOf(
        Gen.Byte.Array[0, 2000],
        AnyInner.Select(Wrap),
        // The header's own bytes mutated in front of a valid packet.
        Gen.Select(ValidInner, Gen.Int[0, 7], Gen.Byte[1, 255]).Select((p, i, x) =>
        {
            var d = Wrap(p);
            d[i] ^= x;
            return d;
        }));

    static readonly DropReason[] InboundReasons =
    [
        DropReason.None, DropReason.UnknownHost, DropReason.Malformed, DropReason.BadVersion,
        DropReason.BadInnerPacket, DropReason.NotLocalCapsule, DropReason.SourceHostMismatch,
    ];

    static readonly DropReason[] OutboundReasons =
        [DropReason.None, DropReason.BadInnerPacket, DropReason.SpoofedSource, DropReason.NoRoute];

    [Fact]
    public void Property_inbound_never_throws_and_refuses_with_an_inbound_reason()
    {
        var seen = new System.Collections.Concurrent.ConcurrentDictionary<DropReason, int>();
        Gen.Select(AnyDatagram, Gen.Int[0, Tables.Length - 1], Gen.OneOf(H1, H2, GwAddr, Stranger))
            .Sample((d, t, from) =>
            {
                var v = Forwarding.Inbound(Tables[t], from, d, out var inner);
                Assert.Contains(v, InboundReasons);
                seen.AddOrUpdate(v, 1, (_, n) => n + 1);
                if (from == Stranger) Assert.Equal(DropReason.UnknownHost, v);
                if (v != DropReason.None)
                {
                    Assert.Equal(default, inner);
                    return;
                }
                // Accepted: exactly what a well-formed datagram is, and the engine's reads after it are in range.
                Assert.Equal(DropReason.None, Wire.TryReadHeader(d, out _, out _));
                Assert.Equal(Wire.HeaderSize..d.Length, inner);
                var p = d.AsSpan(inner);
                Assert.True(Ipv4.IsValid(p));
                Assert.True(d.Length > Wire.HeaderSize + 9);
                _ = Tcp.TryParse(p, out _);
            }, iter: 20_000);
        // The generators reach every decision, acceptance included, not only the first few checks.
        foreach (var r in InboundReasons)
            Assert.True(seen.GetValueOrDefault(r) > 50, $"{r}: {seen.GetValueOrDefault(r)}");
    }

    [Fact]
    public void Property_outbound_never_throws_and_refuses_with_an_outbound_reason()
    {
        Gen.Select(AnyInner, Gen.Int[0, Tables.Length - 1]).Sample((p, t) =>
        {
            var v = Forwarding.Outbound(Tables[t], p, out var to);
            Assert.Contains(v, OutboundReasons);
            Assert.Equal(Ipv4.IsValid(p), v != DropReason.BadInnerPacket);
            if (v != DropReason.None) Assert.Equal(default, to);
            // What the egress loop then reads of a packet: the hold's and local delivery's destination.
            if (Ipv4.IsValid(p)) _ = (Ipv4.Destination(p), Ipv4.Protocol(p));
        }, iter: 20_000);
    }

    [Fact]
    public void Property_every_refusal_is_counted_under_its_reason()
    {
        // The engine's loops: each verdict other than None is added to the thread's counters, once.
        Gen.Select(AnyDatagram, Gen.OneOf(H1, H2, GwAddr, Stranger)).Array[1, 40].Sample(batch =>
        {
            var counters = new DropCounters();
            var expected = new Dictionary<DropReason, long>();
            foreach (var (d, from) in batch)
            {
                var v = Forwarding.Inbound(T2, from, d, out _);
                if (v == DropReason.None) continue;
                var before = counters[v];
                counters.Add(v);
                Assert.Equal(before + 1, counters[v]);
                Assert.NotEqual("none", DropCounters.Key(v));
                expected[v] = expected.GetValueOrDefault(v) + 1;
            }
            foreach (var r in DropCounters.Reasons) Assert.Equal(expected.GetValueOrDefault(r), counters[r]);
        }, iter: 2_000);
    }

    [Fact]
    public void Property_truncation_at_every_length_has_a_specific_reason()
    {
        ValidInner.Sample(p =>
        {
            var d = Wrap(p);
            Assert.Equal(DropReason.None, Forwarding.Inbound(T2, H1, d, out _));
            for (var n = 0; n < d.Length; n++)
                Assert.Equal(n < Wire.HeaderSize ? DropReason.Malformed : DropReason.BadInnerPacket,
                    Forwarding.Inbound(T2, H1, d.AsSpan(0, n), out _));
            for (var n = 0; n < p.Length; n++)
                Assert.Equal(DropReason.BadInnerPacket, Forwarding.Outbound(T1, p.AsSpan(0, n), out _));
        }, iter: 50);
    }

    [Fact]
    public void Property_header_byte_flips_have_a_specific_reason()
    {
        Gen.Select(ValidInner, Gen.Int[0, 3], Gen.Byte[1, 255]).Sample((p, i, x) =>
        {
            var d = Wrap(p);
            d[i] ^= x;
            // Flags hold one of two modes: a flip from one to the other is a header still well-formed.
            var want = i == 1 ? DropReason.BadVersion
                : i == 3 && (d[3] is 1 or 2) ? DropReason.None
                : DropReason.Malformed;
            Assert.Equal(want, Forwarding.Inbound(T2, H1, d, out _));
        });
    }

    [Fact]
    public void Property_extreme_total_length_or_ihl_is_a_bad_inner_packet()
    {
        Gen.Select(ValidInner, Gen.OneOf<ushort>(0, 1, 19, 20, 0x7FFF, 0xFFFF), Gen.Bool).Sample((p, len, ihl) =>
        {
            var d = p.ToArray();
            if (ihl) d[0] = (byte)(0x40 | (len & 0xF)); // IHL 0, 1, 15 (60 bytes: past a short packet) …
            else if (len != d.Length) BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(2), len);
            else return;
            var valid = Ipv4.IsValid(d);
            if (!ihl) Assert.False(valid);
            else Assert.Equal((len & 0xF) * 4 is >= 20 and var h && h <= d.Length, valid);
            var want = valid ? DropReason.None : DropReason.BadInnerPacket;
            Assert.Equal(want, Forwarding.Inbound(T2, H1, Wrap(d), out _));
            Assert.Equal(want, Forwarding.Outbound(T1, d, out _));
        });
    }

    [Fact]
    public void Property_valid_datagrams_round_trip()
    {
        Gen.Select(ValidInner, Gen.UInt).Sample((p, epoch) =>
        {
            var d = Packets.Wrap(p, epoch);
            Assert.Equal(DropReason.None, Wire.TryReadHeader(d, out var kind, out var e));
            Assert.Equal((Wire.Kind.Ipv4, epoch), (kind, e));
            Assert.Equal(DropReason.None, Forwarding.Outbound(T1, p, out var to));
            Assert.Equal(H2, to);
            Assert.Equal(DropReason.None, Forwarding.Inbound(T2, H1, d, out var inner));
            Assert.Equal(p, d[inner]);
            Assert.Equal((A, B), (Ipv4.Source(d.AsSpan(inner)), Ipv4.Destination(d.AsSpan(inner))));
        });
    }

    [Fact]
    public void Property_tcp_parse_never_throws_on_large_or_mutated_input()
    {
        Gen.OneOf(AnyInner, Mutated(ValidInner.Select(p => p[9] == 6 ? p : Inet.Tcp(A, 1, B, 2, 3, 4, Tcp.SYN, 5,
                [2, 4, 5, 180, 1, 3, 3, 7, 4, 2, 1, 1], Inet.Pattern(p.Length % 50)))))
            .Sample(p =>
            {
                if (!Tcp.TryParse(p, out var s)) return;
                Assert.InRange(s.PayloadLength, 0, p.Length - 40);
                Assert.InRange(s.WindowScale, -1, 14);
                // What the ingress loop does next to an accepted segment of a paused flow.
                Tcp.SetWindow(p, 0);
                Assert.True(Tcp.TryParse(p, out var z));
                Assert.Equal(0, z.Window);
            }, iter: 20_000);
    }

    [Fact]
    public void Property_tcp_ack_round_trips()
    {
        Gen.Select(Gen.Select(Gen.UInt, Gen.UShort, Gen.UInt, Gen.UShort), Gen.Select(Gen.UInt, Gen.UInt, Gen.UShort),
            Gen.Select(Gen.Bool, Gen.UInt, Gen.UInt)).Sample((addr, nums, ts) =>
        {
            var (src, sport, dst, dport) = addr;
            var (seq, ack, win) = nums;
            var (hasTs, tsVal, tsEcr) = ts;
            var b = new byte[Tcp.MaxAck];
            var n = Tcp.WriteAck(b, new(src), sport, new(dst), dport, seq, ack, win, hasTs, tsVal, tsEcr);
            Assert.True(Tcp.TryParse(b.AsSpan(0, n), out var s));
            Assert.Equal(new TcpSegment(new(src), sport, new(dst), dport, seq, ack, Tcp.ACK, win, 0, hasTs,
                hasTs ? tsVal : 0, hasTs ? tsEcr : 0, -1), s);
        });
    }

    [Fact]
    public void Property_icmp_answer_never_throws_and_is_a_valid_packet()
    {
        // The gateway answers whatever NoRoute packet came out of its TUN: any bytes at all reach it.
        AnyInner.Sample(p =>
        {
            var answer = new byte[Icmp.MaxAnswer];
            var n = Icmp.WriteHostUnreachable(p, GwAddr, answer);
            Assert.InRange(n, 0, Icmp.MaxAnswer);
            if (n == 0) return;
            var a = answer.AsSpan(0, n);
            Assert.True(Ipv4.IsValid(a));
            Assert.Equal(0, Icmp.Checksum(a[..20]));
            Assert.Equal(0, Icmp.Checksum(a[20..]));
            Assert.Equal(Ipv4.Source(p), Ipv4.Destination(a));
        }, iter: 20_000);
    }
}
