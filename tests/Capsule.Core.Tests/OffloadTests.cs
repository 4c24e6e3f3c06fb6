using System.Buffers.Binary;
using Capsule.Core.Offload;

namespace Capsule.Core.Tests;

/// <summary>
/// Segmentation and coalescing (issue 11): any stream of TCP segments, coalesced and cut again, gives back the
/// same bytes with valid checksums; a super-packet as the kernel hands it over is cut as its TSO would cut it.
/// </summary>
public class OffloadTests
{
    const int Stride = 2048;

    /// <summary>A TCP segment of one of a few flows (source 100.64.0.2 + flow), with valid checksums.</summary>
    static byte[] Segment(int flow, uint seq, ushort id, byte flags, int payload, byte fill) =>
        Inet.Tcp(Locator.Parse($"100.64.0.{2 + flow}"), (ushort)(40000 + flow), Locator.Parse("198.51.100.11"), 80,
            seq, 12345, flags, 501, Inet.TsOption(777, 0), Inet.Pattern(payload, fill), id: id);

    /// <summary>
    /// Streams as a sender's segments arrive: per flow in order, runs of full segments, now and then a short one,
    /// a PSH, a jump in the IP id or an ack-only segment; flows interleaved.
    /// </summary>
    static readonly Gen<List<byte[]>> Streams =
        Gen.Select(Gen.Int[1, 4], Gen.Int[200, 1400], Gen.UInt, Gen.Int[0, 99].Array[3, 180])
            .Select(t => Stream(t.Item1, t.Item2, t.Item3, t.Item4));

    static List<byte[]> Stream(int flows, int mss, uint seed, int[] r)
    {
        var seq = new uint[flows];
        var id = new ushort[flows];
        for (var f = 0; f < flows; f++) (seq[f], id[f]) = (seed * (uint)(f + 1), (ushort)(seed >> (f * 4)));
        var list = new List<byte[]>();
        for (var i = 0; i + 2 < r.Length; i += 3)
        {
            var f = r[i] % flows;
            var kind = r[i + 1];
            // Mostly full segments; a short one, an ack without data, a PSH, another sender's ids now and then.
            var len = kind < 70 ? mss : kind < 80 ? 1 + r[i + 2] * (mss - 1) / 100 : kind < 85 ? 0 : mss;
            var flags = (byte)(Tcp.ACK | (kind is >= 85 and < 92 ? Tcp.PSH : 0));
            if (kind >= 95) id[f] += 7;
            list.Add(Segment(f, seq[f], id[f], flags, len, (byte)i));
            seq[f] += (uint)len;
            id[f]++;
        }
        return list;
    }

    static List<byte[]> Cut(VirtioNetHeader h, ReadOnlySpan<byte> packet)
    {
        var dst = new byte[64 * Stride];
        var lengths = new int[64];
        var n = Segmenter.Cut(h, packet, dst, Stride, 0, lengths, out var why);
        Assert.True(n > 0, $"refused: {why}");
        return Enumerable.Range(0, n).Select(k => dst.AsSpan(k * Stride, lengths[k]).ToArray()).ToList();
    }

    static int FlowOf(byte[] p) => p[15];

    [Fact]
    public void Property_any_stream_coalesced_and_cut_again_gives_the_same_segments_in_each_flows_order()
    {
        Streams.Sample(stream =>
        {
            var coalescer = new Coalescer(slots: 2); // fewer slots than flows: evictions too
            var back = new List<byte[]>();
            var packets = 0;
            foreach (var s in stream)
                coalescer.Add(s, (h, p) =>
                {
                    packets++;
                    back.AddRange(Cut(h, p));
                });
            coalescer.Flush((h, p) =>
            {
                packets++;
                back.AddRange(Cut(h, p));
            });
            Assert.True(packets <= stream.Count);
            foreach (var p in back) Assert.True(InetChecksum.IsValid(p), "a checksum is wrong");
            foreach (var flow in stream.Select(FlowOf).Distinct())
            {
                var sent = stream.Where(p => FlowOf(p) == flow).ToList();
                var got = back.Where(p => FlowOf(p) == flow).ToList();
                Assert.Equal(sent.Count, got.Count);
                for (var i = 0; i < sent.Count; i++) Assert.Equal(sent[i], got[i]);
            }
        }, iter: 500, threads: 1);
    }

    [Fact]
    public void A_run_of_full_segments_becomes_one_packet_for_the_kernel_to_finish()
    {
        var segs = Enumerable.Range(0, 5).Select(i =>
            Segment(0, 1000 + (uint)(i * 1000), (ushort)(9 + i), (byte)(Tcp.ACK | (i == 4 ? Tcp.PSH : 0)), 1000,
                (byte)i)).ToList();
        var c = new Coalescer();
        var out_ = new List<(VirtioNetHeader H, byte[] P)>();
        foreach (var s in segs) c.Add(s, (h, p) => out_.Add((h, p.ToArray())));
        c.Flush((h, p) => out_.Add((h, p.ToArray())));
        var (hdr, packet) = Assert.Single(out_);
        Assert.Equal(new VirtioNetHeader(VirtioNetHeader.NeedsCsum, VirtioNetHeader.GsoTcpV4, 52, 1000, 20, 16), hdr);
        Assert.Equal(52 + 5000, packet.Length);
        Assert.Equal(Tcp.ACK | Tcp.PSH, packet[33]);
        // The kernel completes the checksum over [20, end) from the pseudo-header's sum in the field.
        var full = packet.ToArray();
        BinaryPrimitives.WriteUInt16BigEndian(full.AsSpan(36),
            InetChecksum.Finish(InetChecksum.Add(full.AsSpan(20))));
        Assert.True(InetChecksum.IsValid(full));
    }

    [Fact]
    public void A_tso_super_packet_is_cut_at_gso_size_with_fin_and_psh_on_the_last_segment_only()
    {
        var super = Segment(0, 5000, 100, Tcp.ACK | Tcp.PSH | Tcp.FIN, 3500, 1);
        var h = new VirtioNetHeader(VirtioNetHeader.NeedsCsum, VirtioNetHeader.GsoTcpV4, 52, 1448, 20, 16);
        var segs = Cut(h, super);
        Assert.Equal([1448, 1448, 604], segs.Select(s => s.Length - 52));
        Assert.Equal([5000u, 6448u, 7896u], segs.Select(s => BinaryPrimitives.ReadUInt32BigEndian(s.AsSpan(24))));
        Assert.Equal([(ushort)100, (ushort)101, (ushort)102],
            segs.Select(s => BinaryPrimitives.ReadUInt16BigEndian(s.AsSpan(4))));
        Assert.Equal([Tcp.ACK, Tcp.ACK, (byte)(Tcp.ACK | Tcp.PSH | Tcp.FIN)], segs.Select(s => s[33]));
        Assert.All(segs, s => Assert.True(InetChecksum.IsValid(s)));
        Assert.Equal(super.AsSpan(52).ToArray(), segs.SelectMany(s => s.Skip(52)).ToArray());
    }

    [Fact]
    public void A_udp_super_packet_is_cut_into_datagrams_of_their_own_length()
    {
        var p = Inet.Ip(Locator.Parse("100.64.0.2"), Locator.Parse("100.64.0.3"), 17, Inet.Pattern(8 + 2500));
        var segs = Cut(new VirtioNetHeader(VirtioNetHeader.NeedsCsum, VirtioNetHeader.GsoUdpL4, 28, 1200, 20, 6), p);
        Assert.Equal([1208, 1208, 108], segs.Select(s => (int)BinaryPrimitives.ReadUInt16BigEndian(s.AsSpan(24))));
        Assert.All(segs, s => Assert.True(InetChecksum.IsValid(s)));
    }

    [Fact]
    public void What_cannot_be_cut_is_refused_with_its_reason()
    {
        var lengths = new int[4];
        var dst = new byte[4 * Stride];
        var super = Segment(0, 1, 1, Tcp.ACK, 9000, 1);
        var tcp = new VirtioNetHeader(VirtioNetHeader.NeedsCsum, VirtioNetHeader.GsoTcpV4, 52, 1000, 20, 16);
        Assert.Equal(0, Segmenter.Cut(tcp, super, dst, Stride, 0, lengths, out var why));
        Assert.Equal(Segmenter.Refusal.TooLarge, why); // 9 segments, room for 4
        Assert.Equal(0, Segmenter.Cut(tcp with { GsoType = VirtioNetHeader.GsoTcpV6 }, super, dst, Stride, 0,
            lengths, out why));
        Assert.Equal(Segmenter.Refusal.Unsupported, why);
        Assert.Equal(0, Segmenter.Cut(tcp, super.AsSpan(0, 30), dst, Stride, 0, lengths, out why));
        Assert.Equal(Segmenter.Refusal.Malformed, why);
    }

    /// <summary>RFC 1071 as written: big-endian 16-bit words, one at a time.</summary>
    static ushort ReferenceSum(byte[] data, int start, ulong sum)
    {
        var i = start;
        for (; i + 1 < data.Length; i += 2) sum += (ulong)(data[i] << 8 | data[i + 1]);
        if (i < data.Length) sum += (ulong)data[i] << 8;
        while (sum >> 16 != 0) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)sum;
    }

    [Fact]
    public void Property_the_checksum_sum_is_rfc_1071s_at_any_length_and_alignment()
    {
        // The bulk is summed in machine order, 32 bytes at a time; lengths around those boundaries and odd starts
        // (a span need not be aligned) must give what the word-by-word sum gives.
        Gen.Select(Gen.Byte.Array[0, 300], Gen.Int[0, 3], Gen.UInt).Sample((data, start, seed) =>
        {
            if (start > data.Length) start = data.Length;
            var got = InetChecksum.Fold(InetChecksum.Add(data.AsSpan(start), seed));
            Assert.Equal(ReferenceSum(data, start, seed), got);
        }, iter: 2000);
    }

    [Fact]
    public void Property_no_header_and_bytes_make_the_segmenter_throw()
    {
        var dst = new byte[8 * Stride];
        var lengths = new int[8];
        Gen.Select(Gen.Byte, Gen.Byte, Gen.UShort, Gen.UShort, Gen.Byte.Array[0, 3000]).Sample((f, g, gso, cs, b) =>
        {
            var h = new VirtioNetHeader(f, g, 0, gso, cs, 16);
            var n = Segmenter.Cut(h, b, dst, Stride, 0, lengths, out var why);
            Assert.True(n > 0 ? why == Segmenter.Refusal.None : why != Segmenter.Refusal.None);
        }, iter: 5_000);
    }
}
