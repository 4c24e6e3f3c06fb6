using System.Buffers.Binary;

namespace Capsule.Core.Offload;

/// <summary>
/// Cuts what a TUN with offloads hands over (a packet after its <see cref="VirtioNetHeader"/>) into the packets
/// that go on the wire, as the kernel's own TSO/USO would: every segment gets the headers of the super-packet with
/// its own IPv4 total length, IP id (the first's plus its index), TCP sequence number (the first's plus the
/// payload before it) or UDP length, and complete checksums. FIN and PSH stay on the last TCP segment only, CWR
/// on the first. A packet that needs no cutting is copied, its checksum completed if the kernel left it partial.
/// Pure and allocation-free: segment k is written at <c>k * stride + offset</c> of the destination, so that it
/// lands in slot k of a batch, after room for the overlay's header.
/// </summary>
public static class Segmenter
{
    /// <summary>Why a super-packet was not cut (then it is dropped and counted).</summary>
    public enum Refusal
    {
        None,
        /// <summary>Not an IPv4 TCP or UDP packet the header says it is, or cut short.</summary>
        Malformed,
        /// <summary>A segmentation this data plane does not do (IPv6, UDP fragmentation).</summary>
        Unsupported,
        /// <summary>More segments, or longer ones, than the destination has room for.</summary>
        TooLarge,
    }

    /// <summary>
    /// Cuts <paramref name="packet"/> as <paramref name="h"/> asks into <paramref name="dst"/>; each segment's
    /// length into <paramref name="lengths"/>. Returns how many segments, or 0 with <paramref name="refusal"/> set.
    /// </summary>
    public static int Cut(VirtioNetHeader h, ReadOnlySpan<byte> packet, Span<byte> dst, int stride, int offset,
        Span<int> lengths, out Refusal refusal)
    {
        refusal = Refusal.None;
        if (h.Gso == VirtioNetHeader.GsoNone) return Whole(h, packet, dst, offset, lengths, ref refusal);
        if (h.Gso is not (VirtioNetHeader.GsoTcpV4 or VirtioNetHeader.GsoUdpL4))
            return Fail(out refusal, Refusal.Unsupported);
        var tcp = h.Gso == VirtioNetHeader.GsoTcpV4;
        if (!Headers(packet, tcp, out var ihl, out var hdrLen)) return Fail(out refusal, Refusal.Malformed);
        var payload = packet.Length - hdrLen;
        if (h.GsoSize == 0 || payload <= 0) return Fail(out refusal, Refusal.Malformed);
        var count = (payload + h.GsoSize - 1) / h.GsoSize;
        if (count > lengths.Length || hdrLen + Math.Min(payload, h.GsoSize) > stride - offset
            || (count - 1) * stride + offset + hdrLen + (payload - (count - 1) * h.GsoSize) > dst.Length)
            return Fail(out refusal, Refusal.TooLarge);
        var id = BinaryPrimitives.ReadUInt16BigEndian(packet[4..]);
        var seq = tcp ? BinaryPrimitives.ReadUInt32BigEndian(packet[(ihl + 4)..]) : 0;
        var flags = tcp ? packet[ihl + 13] : (byte)0;
        for (var k = 0; k < count; k++)
        {
            var from = k * h.GsoSize;
            var size = Math.Min(h.GsoSize, payload - from);
            var seg = dst.Slice(k * stride + offset, hdrLen + size);
            packet[..hdrLen].CopyTo(seg);
            packet.Slice(hdrLen + from, size).CopyTo(seg[hdrLen..]);
            BinaryPrimitives.WriteUInt16BigEndian(seg[2..], (ushort)seg.Length);
            BinaryPrimitives.WriteUInt16BigEndian(seg[4..], (ushort)(id + k));
            InetChecksum.SetIpv4(seg);
            if (tcp)
            {
                BinaryPrimitives.WriteUInt32BigEndian(seg[(ihl + 4)..], seq + (uint)from);
                var f = flags;
                if (k < count - 1) f &= unchecked((byte)~(Tcp.FIN | Tcp.PSH));
                if (k > 0) f &= unchecked((byte)~Cwr);
                seg[ihl + 13] = f;
                InetChecksum.SetTransport(seg, 16);
            }
            else
            {
                BinaryPrimitives.WriteUInt16BigEndian(seg[(ihl + 4)..], (ushort)(8 + size));
                InetChecksum.SetTransport(seg, 6);
            }
            lengths[k] = seg.Length;
        }
        return count;
    }

    const byte Cwr = 0x80;

    static int Fail(out Refusal refusal, Refusal why)
    {
        refusal = why;
        return 0;
    }

    /// <summary>One packet, copied; a checksum the kernel left partial completed over [CsumStart, end).</summary>
    static int Whole(VirtioNetHeader h, ReadOnlySpan<byte> packet, Span<byte> dst, int offset, Span<int> lengths,
        ref Refusal refusal)
    {
        if (lengths.IsEmpty || offset + packet.Length > dst.Length) return Fail(out refusal, Refusal.TooLarge);
        var to = dst.Slice(offset, packet.Length);
        packet.CopyTo(to);
        if (h.NeedsChecksum)
        {
            var at = h.CsumStart + h.CsumOffset;
            if (h.CsumStart >= packet.Length || at + 2 > packet.Length) return Fail(out refusal, Refusal.Malformed);
            var c = InetChecksum.Finish(InetChecksum.Add(to[h.CsumStart..]));
            // A UDP checksum that comes out zero goes as 0xFFFF: zero would mean none (RFC 768).
            if (c == 0 && packet.Length > 9 && packet[9] == 17) c = 0xFFFF;
            BinaryPrimitives.WriteUInt16BigEndian(to[at..], c);
        }
        lengths[0] = packet.Length;
        return 1;
    }

    /// <summary>An IPv4 header, unfragmented, of the protocol the segmentation names; its headers' length.</summary>
    static bool Headers(ReadOnlySpan<byte> p, bool tcp, out int ihl, out int hdrLen)
    {
        ihl = hdrLen = 0;
        if (p.Length < Ipv4.MinHeader || p[0] >> 4 != 4) return false;
        ihl = (p[0] & 0xF) * 4;
        if (ihl < Ipv4.MinHeader || p[9] != (tcp ? Tcp.Protocol : 17)) return false;
        if ((BinaryPrimitives.ReadUInt16BigEndian(p[6..]) & 0x3FFF) != 0) return false;
        if (tcp)
        {
            if (p.Length < ihl + 20) return false;
            hdrLen = ihl + (p[ihl + 12] >> 4) * 4;
            return hdrLen >= ihl + 20 && hdrLen <= p.Length;
        }
        hdrLen = ihl + 8;
        return hdrLen <= p.Length;
    }
}
