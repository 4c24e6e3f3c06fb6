using System.Buffers.Binary;

namespace Capsule.Core.Tests;

public class IcmpTests
{
    static readonly Locator Gw = Locator.Parse("10.0.0.9");
    static readonly Locator Ordinary = Locator.Parse("198.51.100.11");
    static readonly Locator Nobody = Locator.Parse("100.64.200.1");

    // ---- Checksum ----

    [Fact]
    public void Checksum_rfc1071_example()
    {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, so the checksum is its complement.
        Assert.Equal(0x220d, Icmp.Checksum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]));
    }

    [Fact]
    public void Checksum_known_ipv4_header()
    {
        // The usual worked example: 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7.
        byte[] h = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
            0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7];
        Assert.Equal(0xb861, Icmp.Checksum(h));
        h[10] = 0xb8;
        h[11] = 0x61;
        Assert.Equal(0, Icmp.Checksum(h));
    }

    [Theory]
    [InlineData(new byte[0], 0xFFFF)]
    [InlineData(new byte[] { 0x01 }, 0xFEFF)]             // odd: the last byte is the high half of a word
    [InlineData(new byte[] { 0x00, 0x01, 0xf2 }, 0x0DFE)] // 0001 + f200 = f201
    [InlineData(new byte[] { 0xFF, 0xFF }, 0x0000)]
    [InlineData(new byte[] { 0x00, 0x00, 0x00 }, 0xFFFF)]
    [InlineData(new byte[] { 0xFF, 0xFF, 0x00, 0x01 }, 0xFFFE)] // ffff + 0001 = 1 0000 -> end-around carry -> 0001
    [InlineData(new byte[] { 0x80, 0x00, 0x80, 0x00, 0x01 }, 0xFEFE)] // 8000 + 8000 -> carry -> 0001, + 0100 = 0101
    public void Checksum_vectors(byte[] data, int expected) => Assert.Equal(expected, Icmp.Checksum(data));

    [Fact]
    public void Property_checksum_matches_reference_and_odd_equals_zero_padded()
    {
        Gen.Byte.Array[0, 200].Sample(d =>
        {
            Assert.Equal(Inet.RefChecksum(d), Icmp.Checksum(d));
            if (d.Length % 2 == 1) Assert.Equal(Icmp.Checksum([.. d, 0]), Icmp.Checksum(d));
        }, iter: 5_000);
    }

    [Fact]
    public void Property_storing_the_checksum_makes_the_data_verify()
    {
        Gen.Select(Gen.Byte.Array[2, 100], Gen.Int).Sample((d, at) =>
        {
            if (d.Length % 2 == 1) d = [.. d, 0];
            var i = (int)((uint)at % (uint)(d.Length / 2)) * 2;
            d[i] = 0;
            d[i + 1] = 0;
            BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(i), Icmp.Checksum(d));
            Assert.Equal(0, Icmp.Checksum(d));
        }, iter: 5_000);
    }

    // ---- WriteHostUnreachable ----

    /// <summary>Checks everything about an answer and returns its ICMP part.</summary>
    static byte[] CheckAnswer(byte[] original, byte[] buffer, int n)
    {
        var ihl = Inet.Ihl(original);
        var quote = Math.Min(original.Length, ihl + 8);
        Assert.Equal(20 + 8 + quote, n);
        var a = buffer[..n];
        Assert.True(Ipv4.IsValid(a));
        Assert.Equal(0x45, a[0]);                 // no options of our own
        Assert.Equal(n, BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(2)));
        Assert.Equal(0, BinaryPrimitives.ReadUInt16BigEndian(a.AsSpan(6)) & 0x3FFF); // not a fragment
        Assert.True(a[8] > 0);                     // a TTL that lets it travel
        Assert.Equal(1, Ipv4.Protocol(a));
        Assert.Equal(Gw, Ipv4.Source(a));
        Assert.Equal(Ipv4.Source(original), Ipv4.Destination(a));
        Assert.Equal(0, Icmp.Checksum(a.AsSpan(0, 20)));
        Assert.Equal(0, Inet.RefChecksum(a[..20]));
        var icmp = a[20..];
        Assert.Equal(3, icmp[0]);
        Assert.Equal(1, icmp[1]);
        Assert.Equal(Icmp.DestinationUnreachable, icmp[0]);
        Assert.Equal(Icmp.HostUnreachable, icmp[1]);
        Assert.Equal(0, Icmp.Checksum(icmp));
        Assert.Equal(0, Inet.RefChecksum(icmp));
        Assert.Equal(new byte[4], icmp[4..8]);     // unused field is zero
        Assert.Equal(original[..quote], icmp[8..]);
        return icmp;
    }

    static int Answer(byte[] original, out byte[] buffer, int size = Icmp.MaxAnswer)
    {
        buffer = Enumerable.Repeat((byte)0xA5, size).ToArray();
        return Icmp.WriteHostUnreachable(original, Gw, buffer);
    }

    [Fact]
    public void Udp_packet_gets_host_unreachable_quoting_header_and_8_bytes()
    {
        var p = Packets.Build(Ordinary, Nobody, payload: 30);
        var n = Answer(p, out var buf);
        Assert.Equal(20 + 8 + 20 + 8, n);
        CheckAnswer(p, buf, n);
        Assert.All(buf[n..], b => Assert.Equal(0xA5, b)); // nothing written past the answer
    }

    [Fact]
    public void Answer_can_be_written_at_an_offset_and_leaves_the_rest_alone()
    {
        var p = Packets.Build(Ordinary, Nobody, payload: 100);
        var buf = Enumerable.Repeat((byte)0x5A, 200).ToArray();
        var n = Icmp.WriteHostUnreachable(p, Gw, buf.AsSpan(10));
        Assert.Equal(56, n);
        Assert.All(buf[..10], b => Assert.Equal(0x5A, b));
        Assert.All(buf[(10 + n)..], b => Assert.Equal(0x5A, b));
        CheckAnswer(p, buf[10..], n);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    public void Short_payload_is_quoted_whole(int payload)
    {
        var p = Packets.Build(Ordinary, Nobody, payload);
        var n = Answer(p, out var buf);
        Assert.Equal(28 + 20 + Math.Min(payload, 8), n);
        CheckAnswer(p, buf, n); // includes odd-length ICMP checksums
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(10)] // the largest header: 60 bytes
    public void Header_with_options_is_quoted_whole(int optionWords)
    {
        var p = Inet.Ip(Ordinary, Nobody, 17, Inet.Pattern(40), optionWords);
        Assert.True(Ipv4.IsValid(p));
        var n = Answer(p, out var buf);
        Assert.Equal(28 + 20 + 4 * optionWords + 8, n);
        CheckAnswer(p, buf, n);
    }

    [Fact]
    public void MaxAnswer_is_exactly_enough_for_the_largest_header()
    {
        var p = Inet.Ip(Ordinary, Nobody, 17, Inet.Pattern(100), ipOptionWords: 10);
        Assert.Equal(Icmp.MaxAnswer, Answer(p, out var buf, Icmp.MaxAnswer));
        CheckAnswer(p, buf, Icmp.MaxAnswer);
        Assert.Equal(0, Answer(p, out _, Icmp.MaxAnswer - 1));
    }

    [Fact]
    public void Too_small_buffer_gets_no_answer_and_is_not_touched()
    {
        var p = Packets.Build(Ordinary, Nobody, payload: 30);
        foreach (var size in new[] { 0, 1, 20, 28, 55 })
        {
            Assert.Equal(0, Answer(p, out var buf, size));
            Assert.All(buf, b => Assert.Equal(0xA5, b));
        }
        Assert.Equal(56, Answer(p, out _, 56));
    }

    [Fact]
    public void Tcp_packet_quotes_its_ports_and_sequence_number()
    {
        var p = Inet.Tcp(Ordinary, 40000, Nobody, 80, 0x01020304, 0, Tcp.SYN, 64240, payload: Inet.Pattern(20));
        var n = Answer(p, out var buf);
        var icmp = CheckAnswer(p, buf, n);
        // The 8 quoted bytes are what lets the sender match the error to its connection.
        Assert.Equal(40000, BinaryPrimitives.ReadUInt16BigEndian(icmp.AsSpan(28)));
        Assert.Equal(80, BinaryPrimitives.ReadUInt16BigEndian(icmp.AsSpan(30)));
        Assert.Equal(0x01020304u, BinaryPrimitives.ReadUInt32BigEndian(icmp.AsSpan(32)));
    }

    static byte[] IcmpPacket(byte type, byte code = 0, int extra = 8)
    {
        var m = new byte[4 + extra];
        m[0] = type;
        m[1] = code;
        for (var i = 4; i < m.Length; i++) m[i] = (byte)i;
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(2), Inet.RefChecksum(m));
        return Inet.Ip(Ordinary, Nobody, 1, m);
    }

    [Theory]
    [InlineData(3)]  // destination unreachable
    [InlineData(4)]  // source quench
    [InlineData(5)]  // redirect
    [InlineData(11)] // time exceeded
    [InlineData(12)] // parameter problem
    public void Icmp_error_gets_no_answer(byte type)
    {
        Assert.Equal(0, Answer(IcmpPacket(type, 1), out var buf));
        Assert.All(buf, b => Assert.Equal(0xA5, b));
        // Even one that itself quotes a whole packet.
        var inner = Packets.Build(Nobody, Ordinary, payload: 8);
        var m = new byte[8 + inner.Length];
        m[0] = type;
        inner.CopyTo(m, 8);
        Assert.Equal(0, Answer(Inet.Ip(Ordinary, Nobody, 1, m), out _));
    }

    [Theory]
    [InlineData(8)]  // echo request
    [InlineData(0)]  // echo reply
    [InlineData(13)] // timestamp request
    public void Icmp_query_gets_an_answer(byte type)
    {
        var p = IcmpPacket(type, 0, extra: 56);
        var n = Answer(p, out var buf);
        Assert.NotEqual(0, n);
        var icmp = CheckAnswer(p, buf, n);
        Assert.Equal(type, icmp[8 + 20]); // the quoted ICMP type
    }

    [Fact]
    public void Icmp_packet_with_no_icmp_header_gets_an_answer()
    {
        var p = Inet.Ip(Ordinary, Nobody, 1, []);
        var n = Answer(p, out var buf);
        Assert.Equal(48, n);
        CheckAnswer(p, buf, n);
    }

    [Theory]
    [InlineData(0x0001)] // offset 8 bytes
    [InlineData(0x2001)] // MF and an offset: a middle fragment
    [InlineData(0x1FFF)] // last possible offset
    [InlineData(0x4001)] // DF with an offset (odd, but still not the first)
    public void Non_first_fragment_gets_no_answer(ushort frag)
    {
        Assert.Equal(0, Answer(Inet.Ip(Ordinary, Nobody, 17, Inet.Pattern(24), fragField: frag), out _));
        // Not even a non-first fragment that looks like an ICMP echo.
        var echo = IcmpPacket(8);
        BinaryPrimitives.WriteUInt16BigEndian(echo.AsSpan(6), frag);
        Assert.Equal(0, Answer(echo, out _));
    }

    [Theory]
    [InlineData(0x2000)] // MF, offset 0: the first fragment
    [InlineData(0x0000)]
    [InlineData(0x4000)]
    public void First_fragment_or_whole_packet_gets_an_answer(ushort frag)
    {
        var p = Inet.Ip(Ordinary, Nobody, 17, Inet.Pattern(24), fragField: frag);
        var n = Answer(p, out var buf);
        CheckAnswer(p, buf, n);
    }

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("224.0.0.1")]
    [InlineData("224.0.0.0")]
    [InlineData("239.255.255.250")]
    [InlineData("233.1.2.3")]
    [InlineData("255.255.255.255")]
    public void Multicast_broadcast_or_unspecified_source_gets_no_answer(string source)
    {
        Assert.Equal(0, Answer(Packets.Build(Locator.Parse(source), Nobody, payload: 16), out var buf));
        Assert.All(buf, b => Assert.Equal(0xA5, b));
    }

    [Theory]
    [InlineData("223.255.255.255")] // just below multicast
    [InlineData("1.0.0.1")]
    [InlineData("100.64.0.2")]
    public void Neighbours_of_the_refused_sources_still_get_an_answer(string source)
    {
        var p = Packets.Build(Locator.Parse(source), Nobody, payload: 16);
        var n = Answer(p, out var buf);
        CheckAnswer(p, buf, n);
        Assert.Equal(Locator.Parse(source), Ipv4.Destination(buf[..n]));
    }

    [Fact]
    public void Invalid_packets_get_no_answer()
    {
        var good = Packets.Build(Ordinary, Nobody, payload: 16);
        Assert.NotEqual(0, Answer(good, out _));

        Assert.Equal(0, Answer([], out _));
        Assert.Equal(0, Answer(good[..19], out _));
        Assert.Equal(0, Answer(good[..^1], out _));       // truncated: total length disagrees
        Assert.Equal(0, Answer([.. good, 0], out _));     // padded
        var v6 = good.ToArray();
        v6[0] = 0x65;
        Assert.Equal(0, Answer(v6, out _));
        var shortIhl = good.ToArray();
        shortIhl[0] = 0x44;
        Assert.Equal(0, Answer(shortIhl, out _));
        var longIhl = Packets.Build(Ordinary, Nobody, payload: 2);
        longIhl[0] = 0x46; // header longer than the packet
        Assert.Equal(0, Answer(longIhl, out var buf));
        Assert.All(buf, b => Assert.Equal(0xA5, b));
    }

    [Fact]
    public void Answer_is_deterministic_and_independent_of_buffer_contents()
    {
        var p = Packets.Build(Ordinary, Nobody, payload: 30);
        var a = new byte[Icmp.MaxAnswer];
        var b = Enumerable.Repeat((byte)0xFF, Icmp.MaxAnswer).ToArray();
        var n = Icmp.WriteHostUnreachable(p, Gw, a);
        Assert.Equal(n, Icmp.WriteHostUnreachable(p, Gw, b));
        Assert.Equal(a[..n], b[..n]);
    }

    // An independent statement of when an answer is due (RFC 1812 §4.3.2.7 as the code documents it).
    // ICMP: only the query types (echo, timestamp, information, address mask requests, echo reply)
    // are answered; everything else is treated as a possible error, which is the safe side.
    static bool AnswerDue(byte[] p, int bufferSize)
    {
        if (p.Length < 20 || p[0] >> 4 != 4) return false;
        var ihl = (p[0] & 0xF) * 4;
        if (ihl < 20 || ihl > p.Length || (p[2] << 8 | p[3]) != p.Length) return false;
        if (((p[6] << 8 | p[7]) & 0x1FFF) != 0) return false;
        var src = (uint)(p[12] << 24 | p[13] << 16 | p[14] << 8 | p[15]);
        var dst = (uint)(p[16] << 24 | p[17] << 16 | p[18] << 8 | p[19]);
        // RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7: no answer about a source that is not one host
        // (0, loopback, multicast, class E, broadcast) or to a multicast or broadcast destination.
        if (src == 0 || src >= 0xE0000000 || (src >> 24) == 127) return false;
        if ((dst >= 0xE0000000 && dst <= 0xEFFFFFFF) || dst == 0xFFFFFFFF) return false;
        if (p[9] == 1 && p.Length > ihl && p[ihl] is not (0 or 8 or 13 or 15 or 17)) return false;
        return bufferSize >= 28 + Math.Min(p.Length, ihl + 8);
    }

    static readonly byte[] Seed = Inet.Ip(Ordinary, Nobody, 17, Inet.Pattern(24));
    static readonly byte[] SeedIcmp = IcmpPacket(8);

    /// <summary>
    /// Random bytes; random mutations of good packets; headers with coherent lengths and random fields.
    /// </summary>
    static readonly Gen<byte[]> Packetish = Gen.OneOf(
        Gen.Byte.Array[0, 100],
        Gen.Select(Gen.OneOf(Gen.Const(Seed), Gen.Const(SeedIcmp)), Gen.Int[0, 47].Array[0, 3], Gen.Byte, (g, idx, v) =>
        {
            var d = g.ToArray();
            foreach (var i in idx) if (i < d.Length) d[i] ^= (byte)(v | 1);
            return d;
        }),
        Gen.Select(Gen.Int[5, 15], Gen.Int[0, 30], Gen.Byte.Array[60],
            Gen.OneOf<byte>(Gen.Byte, Gen.Const<byte>(1), Gen.Const<byte>(17)),
            Gen.OneOf<ushort>(Gen.UShort, Gen.Const<ushort>(0), Gen.Const<ushort>(0x4000), Gen.Const<ushort>(0x2000)),
            (ihlWords, payload, rnd, proto, frag) =>
        {
            var d = new byte[Math.Max(20, ihlWords * 4 + payload)];
            rnd.AsSpan(0, Math.Min(rnd.Length, d.Length)).CopyTo(d);
            d[0] = (byte)(0x40 | ihlWords);
            d[9] = proto;
            BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(6), frag);
            BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(2), (ushort)d.Length);
            return d;
        }));

    [Fact]
    public void Property_never_throws_answers_exactly_when_due_and_answers_are_valid()
    {
        var answered = 0;
        Gen.Select(Packetish, Gen.OneOf(Gen.Const(Icmp.MaxAnswer), Gen.Int[0, Icmp.MaxAnswer])).Sample((p, size) =>
        {
            var buf = new byte[size];
            var n = Icmp.WriteHostUnreachable(p, Gw, buf);
            Assert.Equal(AnswerDue(p, size), n != 0);
            if (n == 0)
            {
                Assert.All(buf, b => Assert.Equal(0, b));
                return;
            }
            answered++;
            CheckAnswer(p, buf, n);
        }, iter: 20_000, threads: 1);
        Assert.True(answered > 1_000, $"the generator should reach the answering path often (got {answered})");
    }

    [Fact]
    public void Rfc1812_no_answer_for_broadcast_or_multicast_destination_or_non_host_source()
    {
        Assert.Equal(0, Answer(Packets.Build(Ordinary, Locator.Parse("224.0.0.251"), 16), out _));
        Assert.Equal(0, Answer(Packets.Build(Ordinary, Locator.Parse("255.255.255.255"), 16), out _));
        Assert.Equal(0, Answer(Packets.Build(Locator.Parse("127.0.0.1"), Nobody, 16), out _));
        Assert.Equal(0, Answer(Packets.Build(Locator.Parse("240.0.0.1"), Nobody, 16), out _));
    }
}
