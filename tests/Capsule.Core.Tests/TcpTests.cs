using System.Buffers.Binary;

namespace Capsule.Core.Tests;

public class TcpTests
{
    static readonly Locator Capsule = Locator.Parse("100.64.0.2");
    static readonly Locator Peer = Locator.Parse("198.51.100.11");

    /// <summary>A Linux-style SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.</summary>
    static byte[] SynOptions(uint tsVal, uint tsEcr, byte wscale = 7)
    {
        var o = new byte[20];
        // MSS 1460
        o[0] = 2;
        o[1] = 4;
        o[2] = 0x05;
        o[3] = 0xB4;
        // SACK permitted
        o[4] = 4;
        o[5] = 2;
        // timestamps
        o[6] = 8;
        o[7] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(8), tsVal);
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(12), tsEcr);
        // NOP
        o[16] = 1;
        // window scale
        o[17] = 3;
        o[18] = 3;
        o[19] = wscale;
        return o;
    }

    static ushort StoredChecksum(ReadOnlySpan<byte> p) => BinaryPrimitives.ReadUInt16BigEndian(p[(Inet.Ihl(p) + 16)..]);
    static ushort Recomputed(ReadOnlySpan<byte> p) =>
        Tcp.Checksum(Ipv4.Source(p), Ipv4.Destination(p), p[Inet.Ihl(p)..]);

    // ---- TryParse ----

    [Fact]
    public void Parses_a_syn_with_mss_window_scale_and_timestamps()
    {
        var p = Inet.Tcp(Peer, 40000, Capsule, 80, 0xFFFFFFF0, 0, Tcp.SYN, 64240, SynOptions(0x11223344, 0));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(Peer, s.Src);
        Assert.Equal(40000, s.SrcPort);
        Assert.Equal(Capsule, s.Dst);
        Assert.Equal(80, s.DstPort);
        Assert.Equal(0xFFFFFFF0u, s.Seq);
        Assert.Equal(0u, s.Ack);
        Assert.Equal(Tcp.SYN, s.Flags);
        Assert.True(s.Syn);
        Assert.False(s.HasAck);
        Assert.False(s.Fin);
        Assert.False(s.Rst);
        Assert.Equal(64240, s.Window);
        Assert.Equal(0, s.PayloadLength);
        Assert.Equal(1u, s.SeqLength);
        Assert.Equal(7, s.WindowScale);
        Assert.True(s.HasTimestamps);
        Assert.Equal(0x11223344u, s.TsVal);
        Assert.Equal(0u, s.TsEcr);
    }

    [Fact]
    public void Parses_a_syn_ack()
    {
        var p = Inet.Tcp(Capsule, 80, Peer, 40000, 1000, 0xFFFFFFF1, Tcp.SYN | Tcp.ACK, 65160,
            SynOptions(7, 0x11223344, 9));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.True(s.Syn && s.HasAck);
        Assert.Equal(0xFFFFFFF1u, s.Ack);
        Assert.Equal(9, s.WindowScale);
        Assert.Equal(7u, s.TsVal);
        Assert.Equal(0x11223344u, s.TsEcr);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(14, 14)]
    [InlineData(15, 14)]  // RFC 7323 §2.3: a shift above 14 is taken as 14
    [InlineData(255, 14)]
    public void Window_scale_is_capped_at_14(byte shift, int expected)
    {
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 0, 0, Tcp.SYN, 1000, SynOptions(1, 2, shift));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(expected, s.WindowScale);
    }

    [Fact]
    public void No_options_means_no_timestamps_and_no_window_scale()
    {
        var p = Inet.Tcp(Peer, 1234, Capsule, 22, 5, 6, Tcp.ACK, 501);
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.False(s.HasTimestamps);
        Assert.Equal(0u, s.TsVal);
        Assert.Equal(0u, s.TsEcr);
        Assert.Equal(-1, s.WindowScale);
        Assert.Equal(0, s.PayloadLength);
        Assert.Equal(0u, s.SeqLength);
        Assert.Equal(new TcpSegment(Peer, 1234, Capsule, 22, 5, 6, Tcp.ACK, 501, 0, false, 0, 0, -1), s);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(100)]
    [InlineData(1448)]
    public void Data_segment_payload_length_and_timestamps(int payload)
    {
        var p = Inet.Tcp(Capsule, 80, Peer, 40000, 123456, 654321, Tcp.ACK | Tcp.PSH, 502,
            Inet.TsOption(0xAABBCCDD, 0x01020304), Inet.Pattern(payload));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(payload, s.PayloadLength);
        Assert.Equal((uint)payload, s.SeqLength);
        Assert.True(s.HasTimestamps);
        Assert.Equal(0xAABBCCDDu, s.TsVal);
        Assert.Equal(0x01020304u, s.TsEcr);
        Assert.Equal(-1, s.WindowScale);
        Assert.Equal((byte)(Tcp.ACK | Tcp.PSH), s.Flags);
    }

    [Fact]
    public void Fin_takes_one_sequence_number_more()
    {
        var p = Inet.Tcp(Capsule, 80, Peer, 40000, 1, 2, Tcp.FIN | Tcp.ACK, 502, payload: Inet.Pattern(10));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.True(s.Fin);
        Assert.Equal(11u, s.SeqLength);
        var rst = Inet.Tcp(Capsule, 80, Peer, 40000, 1, 2, Tcp.RST, 0);
        Assert.True(Tcp.TryParse(rst, out var r));
        Assert.True(r.Rst);
        Assert.Equal(0u, r.SeqLength);
    }

    [Fact]
    public void Options_padded_with_nops_anywhere()
    {
        // NOP NOP NOP [ws 3] NOP NOP NOP NOP NOP [ts] NOP NOP NOP = 3 + 3 + 5 + 10 + 3 = 24
        byte[] o = [1, 1, 1, 3, 3, 5, 1, 1, 1, 1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 10, 1, 1, 1];
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.SYN, 5, o, Inet.Pattern(7));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(5, s.WindowScale);
        Assert.True(s.HasTimestamps);
        Assert.Equal(9u, s.TsVal);
        Assert.Equal(10u, s.TsEcr);
        Assert.Equal(7, s.PayloadLength);
    }

    [Fact]
    public void Unknown_options_are_skipped_by_their_length()
    {
        // SACK block (kind 5, len 10) then an unknown kind 30 of length 6, then timestamps.
        byte[] o = [5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 30, 6, 8, 10, 8, 10, 1, 1, 8, 10, 0, 0, 0, 42, 0, 0, 0, 43];
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, o);
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.True(s.HasTimestamps);
        Assert.Equal(42u, s.TsVal);
        Assert.Equal(43u, s.TsEcr);
        Assert.Equal(-1, s.WindowScale);
    }

    [Fact]
    public void End_of_option_list_stops_parsing()
    {
        byte[] o = [3, 3, 4, 0, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0];
        Assert.True(Tcp.TryParse(Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.SYN, 5, o), out var s));
        Assert.Equal(4, s.WindowScale);
        Assert.False(s.HasTimestamps);
    }

    [Theory]
    [InlineData(new byte[] { 8, 10, 0, 0, 0, 1, 0, 0 })]                  // timestamp cut by the data offset
    [InlineData(new byte[] { 30, 0, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2 })]     // length 0 would loop forever
    [InlineData(new byte[] { 30, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2 })]     // length 1 likewise
    [InlineData(new byte[] { 30, 40, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2 })]    // longer than the options
    [InlineData(new byte[] { 8, 9, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1 })]       // timestamp of the wrong length
    [InlineData(new byte[] { 1, 1, 1, 8 })]                               // a kind with no length byte
    public void Malformed_options_end_parsing_without_timestamps(byte[] o)
    {
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, o, Inet.Pattern(20));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.False(s.HasTimestamps);
        Assert.Equal(20, s.PayloadLength); // the payload is not mistaken for options
    }

    [Fact]
    public void Options_are_read_only_up_to_the_data_offset()
    {
        // A timestamp option sits in the payload, just after a 20-byte header: it is data, not an option.
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, payload: Inet.TsOption(1, 2));
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.False(s.HasTimestamps);
        Assert.Equal(12, s.PayloadLength);
    }

    [Fact]
    public void Ip_options_are_skipped()
    {
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, Inet.TsOption(6, 7), Inet.Pattern(9), ipOptionWords: 2);
        Assert.Equal(0x47, p[0]);
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(1, s.SrcPort);
        Assert.Equal(2, s.DstPort);
        Assert.Equal(3u, s.Seq);
        Assert.Equal(6u, s.TsVal);
        Assert.Equal(9, s.PayloadLength);
    }

    [Theory]
    [InlineData(17)]
    [InlineData(1)]
    [InlineData(0)]
    public void Rejects_other_protocols(byte protocol)
    {
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5);
        p[9] = protocol;
        Assert.False(Tcp.TryParse(p, out var s));
        Assert.Equal(default, s);
    }

    [Theory]
    [InlineData(0x2000)] // MF: first fragment
    [InlineData(0x0001)] // a later one
    [InlineData(0x6001)] // DF+MF+offset
    [InlineData(0x1FFF)]
    public void Rejects_fragments(ushort frag)
    {
        Assert.False(Tcp.TryParse(Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, fragField: frag), out var s));
        Assert.Equal(default, s);
    }

    [Theory]
    [InlineData(0x0000)]
    [InlineData(0x4000)] // DF only
    [InlineData(0x8000)] // the reserved bit alone is not a fragment
    public void Accepts_unfragmented(ushort frag)
    {
        Assert.True(Tcp.TryParse(Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, fragField: frag), out _));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]   // 16 bytes: less than a header
    [InlineData(8)]   // 32 bytes: more than the 20 + 8 there are
    [InlineData(15)]
    public void Rejects_bad_data_offset(int words)
    {
        var p = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, payload: Inet.Pattern(8));
        p[20 + 12] = (byte)(words << 4);
        Assert.False(Tcp.TryParse(p, out var s));
        Assert.Equal(default, s);
        p[20 + 12] = 7 << 4; // exactly 28: header and options, no payload
        Assert.True(Tcp.TryParse(p, out s));
        Assert.Equal(0, s.PayloadLength);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(19)]
    public void Rejects_a_segment_shorter_than_a_tcp_header(int length)
    {
        var p = Inet.Ip(Peer, Capsule, 6, Inet.Pattern(length));
        Assert.False(Tcp.TryParse(p, out _));
    }

    [Fact]
    public void Rejects_invalid_ipv4()
    {
        var good = Inet.Tcp(Peer, 1, Capsule, 2, 3, 4, Tcp.ACK, 5, payload: Inet.Pattern(4));
        Assert.True(Tcp.TryParse(good, out _));
        Assert.False(Tcp.TryParse([], out _));
        Assert.False(Tcp.TryParse(good[..^1], out _));
        Assert.False(Tcp.TryParse([.. good, 0], out _));
        var v6 = good.ToArray();
        v6[0] = 0x65;
        Assert.False(Tcp.TryParse(v6, out _));
    }

    static readonly byte[] SeedSyn = Inet.Tcp(Peer, 40000, Capsule, 80, 1, 0, Tcp.SYN, 64240, SynOptions(5, 0));

    [Fact]
    public void Property_parse_never_throws_and_what_it_accepts_is_coherent()
    {
        var tcpHeaderish = Gen.Select(Gen.Int[0, 15], Gen.Byte.Array[0, 70],
            Gen.Byte.Array[0, 40].Select(a => a.Select(b => (byte)(b % 12)).ToArray()),
            (doff, rnd, opts) =>
            {
                // Random TCP header whose options are dense with the kinds the parser knows.
                var t = new byte[Math.Max(20, rnd.Length)];
                rnd.CopyTo(t, 0);
                t[12] = (byte)(doff << 4);
                opts.AsSpan(0, Math.Min(opts.Length, t.Length - 20)).CopyTo(t.AsSpan(20));
                return Inet.Ip(Peer, Capsule, 6, t);
            });
        var gen = Gen.OneOf(
            Gen.Byte.Array[0, 80],
            tcpHeaderish,
            Gen.Select(Gen.Int[0, SeedSyn.Length - 1].Array[1, 4], Gen.Byte, (idx, v) =>
            {
                var d = SeedSyn.ToArray();
                foreach (var i in idx) d[i] ^= (byte)(v | 1);
                return d;
            }));
        var accepted = 0;
        gen.Sample(p =>
        {
            if (!Tcp.TryParse(p, out var s))
            {
                Assert.Equal(default, s);
                return;
            }
            accepted++;
            Assert.True(Ipv4.IsValid(p));
            Assert.Equal(6, Ipv4.Protocol(p));
            var ihl = Inet.Ihl(p);
            var off = (p[ihl + 12] >> 4) * 4;
            Assert.InRange(off, 20, p.Length - ihl);
            Assert.Equal(p.Length - ihl - off, s.PayloadLength);
            Assert.InRange(s.WindowScale, -1, 14);
            Assert.Equal(Ipv4.Source(p), s.Src);
            Assert.Equal(BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(ihl + 14)), s.Window);
            if (!s.HasTimestamps) Assert.True(s.TsVal == 0 && s.TsEcr == 0);
        }, iter: 20_000, threads: 1);
        Assert.True(accepted > 1_000, $"the generator should reach the option parser often (got {accepted})");
    }

    // ---- Checksum ----

    [Fact]
    public void Checksum_matches_reference_and_ignores_the_stored_field()
    {
        Gen.Select(Gen.UInt, Gen.UInt, Gen.Byte.Array[20, 120]).Sample((s, d, seg) =>
        {
            var src = new Locator(s);
            var dst = new Locator(d);
            var c = Tcp.Checksum(src, dst, seg);
            Assert.Equal(Inet.RefTcpChecksum(src, dst, seg), c);
            seg[16] ^= 0x5A;
            seg[17] ^= 0xA5;
            Assert.Equal(c, Tcp.Checksum(src, dst, seg));
            // Storing it makes the whole segment, pseudo-header included, sum to zero.
            BinaryPrimitives.WriteUInt16BigEndian(seg.AsSpan(16), c);
            var pseudo = new byte[12];
            src.Write(pseudo);
            dst.Write(pseudo.AsSpan(4));
            pseudo[9] = 6;
            BinaryPrimitives.WriteUInt16BigEndian(pseudo.AsSpan(10), (ushort)seg.Length);
            Assert.Equal(0, Inet.RefChecksum(pseudo, seg));
        }, iter: 5_000);
    }

    [Fact]
    public void Checksum_of_a_hand_checked_segment()
    {
        // 10.0.0.1 -> 10.0.0.2, ports 1 -> 2, seq 0, ack 0, offset 5, flags ACK, window 0, no payload.
        // Pseudo: 0a00+0001+0a00+0002+0006+0014 = 0x141d; segment: 0001+0002+5010 = 0x5013; sum 0x6430.
        var seg = new byte[20];
        seg[1] = 1;
        seg[3] = 2;
        seg[12] = 0x50;
        seg[13] = 0x10;
        Assert.Equal(0x9BCF, Tcp.Checksum(Locator.Parse("10.0.0.1"), Locator.Parse("10.0.0.2"), seg));
        // Odd length: one more byte 0xAB counts as 0xAB00 -> 0x6430 + 0xAB00 + 1 (length 21) = 0x10F31 -> 0x0F32.
        Assert.Equal(0xF0CD, Tcp.Checksum(Locator.Parse("10.0.0.1"), Locator.Parse("10.0.0.2"), [.. seg, 0xAB]));
    }

    // ---- WriteAck ----

    static void CheckAck(byte[] buf, int n, bool timestamps, Locator src, ushort sport, Locator to, ushort dport,
        uint seq, uint ack, ushort window, uint tsVal, uint tsEcr)
    {
        Assert.Equal(timestamps ? 52 : 40, n);
        var p = buf[..n];
        Assert.True(Ipv4.IsValid(p));
        Assert.Equal(0x45, p[0]);
        Assert.Equal(n, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(2)));
        Assert.Equal(0x4000, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(6))); // DF, no fragment
        Assert.True(p[8] > 0);
        Assert.Equal(6, p[9]);
        Assert.Equal(src, Ipv4.Source(p));
        Assert.Equal(to, Ipv4.Destination(p));
        Assert.Equal(0, Icmp.Checksum(p.AsSpan(0, 20)));
        Assert.Equal(0, Inet.RefChecksum(p[..20]));

        Assert.Equal(Recomputed(p), StoredChecksum(p));
        Assert.Equal(Inet.RefTcpChecksum(src, to, p.AsSpan(20)), StoredChecksum(p));

        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(new TcpSegment(src, sport, to, dport, seq, ack, Tcp.ACK, window, 0, timestamps,
            timestamps ? tsVal : 0, timestamps ? tsEcr : 0, -1), s);
        Assert.Equal(Tcp.ACK, p[33]);                      // flags exactly ACK
        Assert.Equal(0, p[32] & 0x0F);                     // reserved bits clear
        Assert.Equal(new byte[2], p[38..40]);              // urgent pointer
        Assert.Equal((timestamps ? 8 : 5) << 4, p[32]);    // data offset
        if (timestamps) Assert.Equal(new byte[] { 1, 1, 8, 10 }, p[40..44]);
    }

    [Fact]
    public void WriteAck_without_timestamps()
    {
        var buf = Enumerable.Repeat((byte)0xEE, 64).ToArray();
        var n = Tcp.WriteAck(buf, Capsule, 80, Peer, 40000, 0x80000001, 0xFFFFFFFF, 0, false, 123, 456);
        CheckAck(buf, n, false, Capsule, 80, Peer, 40000, 0x80000001, 0xFFFFFFFF, 0, 123, 456);
        Assert.All(buf[n..], b => Assert.Equal(0xEE, b));
    }

    [Fact]
    public void WriteAck_with_timestamps()
    {
        var buf = Enumerable.Repeat((byte)0xEE, 64).ToArray();
        var n = Tcp.WriteAck(buf, Capsule, 80, Peer, 40000, 17, 42, 65535, true, 0xDEADBEEF, 0x01020304);
        Assert.Equal(Tcp.MaxAck, n);
        CheckAck(buf, n, true, Capsule, 80, Peer, 40000, 17, 42, 65535, 0xDEADBEEF, 0x01020304);
        Assert.All(buf[n..], b => Assert.Equal(0xEE, b));
    }

    [Fact]
    public void WriteAck_fits_exactly_in_MaxAck()
    {
        var buf = new byte[Tcp.MaxAck];
        Assert.Equal(Tcp.MaxAck, Tcp.WriteAck(buf, Capsule, 1, Peer, 2, 3, 4, 5, true, 6, 7));
    }

    [Fact]
    public void Property_WriteAck_round_trips_every_field()
    {
        var addr = Gen.UInt.Select(v => new Locator(v));
        Gen.Select(Gen.Select(addr, Gen.UShort, addr, Gen.UShort, Gen.UInt, Gen.UInt, Gen.UShort, Gen.Bool),
                Gen.UInt, Gen.UInt,
                (a, tsVal, tsEcr) => (a, tsVal, tsEcr))
            .Sample(x =>
            {
                var ((src, sport, to, dport, seq, ack, window, ts), tsVal, tsEcr) = x;
                var buf = Enumerable.Repeat((byte)0x77, Tcp.MaxAck).ToArray();
                var n = Tcp.WriteAck(buf, src, sport, to, dport, seq, ack, window, ts, tsVal, tsEcr);
                CheckAck(buf, n, ts, src, sport, to, dport, seq, ack, window, tsVal, tsEcr);
            }, iter: 5_000);
    }

    // ---- SetWindow ----

    static byte[] DataSegment(ushort window, int payload, bool ts, int ipOptionWords = 0, int seed = 0) =>
        Inet.Tcp(Capsule, 80, Peer, 40000, 1000 + (uint)seed, 2000, Tcp.ACK | Tcp.PSH, window,
            ts ? Inet.TsOption(11, 22) : null, Inet.Pattern(payload, seed), ipOptionWords: ipOptionWords);

    static void CheckSetWindow(byte[] p, ushort window)
    {
        var before = p.ToArray();
        Assert.Equal(Recomputed(p), StoredChecksum(p)); // the generator made a correct segment
        Tcp.SetWindow(p, window);
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(window, s.Window);
        Assert.Equal(Recomputed(p), StoredChecksum(p));
        Assert.Equal(Inet.RefTcpChecksum(Ipv4.Source(p), Ipv4.Destination(p), p.AsSpan(Inet.Ihl(p))),
            StoredChecksum(p));
        var ihl = Inet.Ihl(p);
        for (var i = 0; i < p.Length; i++)
            if (i < ihl + 14 || i >= ihl + 18) Assert.Equal(before[i], p[i]); // only the window and checksum change
        Assert.Equal(0, Icmp.Checksum(p.AsSpan(0, ihl)));
    }

    [Fact]
    public void Property_SetWindow_keeps_the_checksum_right()
    {
        Gen.Select(Gen.UShort, Gen.UShort, Gen.Int[0, 1500], Gen.Bool, Gen.Int[0, 3], Gen.Int[0, 255])
            .Sample((w0, w1, payload, ts, ipOpt, seed) => CheckSetWindow(DataSegment(w0, payload, ts, ipOpt, seed), w1),
                iter: 3_000);
    }

    [Fact]
    public void Property_SetWindow_over_random_segment_bytes()
    {
        // Arbitrary TCP bytes (not only well-formed options), random addresses.
        Gen.Select(Gen.UInt, Gen.UInt, Gen.Byte.Array[20, 200], Gen.UShort).Sample((s, d, t, w) =>
        {
            t[12] = 5 << 4;
            BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(16), Inet.RefTcpChecksum(new(s), new(d), t));
            var p = Inet.Ip(new Locator(s), new Locator(d), 6, t, fragField: 0);
            CheckSetWindow(p, w);
        }, iter: 5_000);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 1)]
    [InlineData(7, 12)]
    public void SetWindow_every_window_value_from_several_starts(int payload, int start)
    {
        // Exhaustive over the window field: includes the values for which the new checksum is 0x0000
        // and 0xFFFF-adjacent, where incremental updates classically go wrong.
        var original = DataSegment((ushort)(start * 5003), payload, ts: payload > 0);
        var sawZero = false;
        for (var w = 0; w <= ushort.MaxValue; w++)
        {
            var p = original.ToArray();
            Tcp.SetWindow(p, (ushort)w);
            var stored = StoredChecksum(p);
            if (stored != Recomputed(p)) Assert.Fail($"window {w}: stored {stored:x4}, recomputed {Recomputed(p):x4}");
            if (BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(34)) != w) Assert.Fail($"window {w} did not read back");
            sawZero |= stored == 0;
        }
        Assert.True(sawZero, "some window value must give a zero checksum");
    }

    [Fact]
    public void SetWindow_chained_changes_stay_right()
    {
        var p = DataSegment(1000, 333, ts: true);
        foreach (var w in new ushort[] { 0, 65535, 0, 1, 65534, 29200, 29200, 0 })
        {
            Tcp.SetWindow(p, w);
            Assert.Equal(w, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(34)));
            Assert.Equal(Recomputed(p), StoredChecksum(p));
        }
    }

    [Fact]
    public void SetWindow_to_the_same_window_changes_nothing()
    {
        var p = DataSegment(4321, 50, ts: true);
        var before = p.ToArray();
        Tcp.SetWindow(p, 4321);
        Assert.Equal(before, p);
        // Not even a deliberately wrong checksum is touched: no rewrite when there is nothing to do.
        p[36] ^= 0xFF;
        before = p.ToArray();
        Tcp.SetWindow(p, 4321);
        Assert.Equal(before, p);
    }

    [Fact]
    public void Property_SetWindow_same_window_is_a_no_op()
    {
        Gen.Select(Gen.UShort, Gen.Int[0, 300], Gen.UShort).Sample((w, payload, junk) =>
        {
            var p = DataSegment(w, payload, ts: payload % 2 == 0);
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(36), junk); // any checksum at all
            var before = p.ToArray();
            Tcp.SetWindow(p, w);
            Assert.Equal(before, p);
        }, iter: 2_000);
    }

    [Fact]
    public void SetWindow_honours_ip_options()
    {
        var p = DataSegment(1000, 10, ts: false, ipOptionWords: 3);
        Tcp.SetWindow(p, 0);
        Assert.True(Tcp.TryParse(p, out var s));
        Assert.Equal(0, s.Window);
        Assert.Equal(Recomputed(p), StoredChecksum(p));
        Assert.Equal(Tcp.ACK | Tcp.PSH, s.Flags); // bytes at the no-options offsets were not touched
        Assert.Equal(10, s.PayloadLength);
    }

    [Fact]
    public void Zero_window_pause_then_reopen_restores_the_original_bytes()
    {
        var original = DataSegment(29200, 1200, ts: true);
        var p = original.ToArray();
        Tcp.SetWindow(p, 0);
        Assert.Equal(Recomputed(p), StoredChecksum(p));
        Tcp.SetWindow(p, 29200);
        Assert.Equal(original, p);
    }
}
