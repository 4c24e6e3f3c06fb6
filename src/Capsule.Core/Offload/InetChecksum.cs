using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Capsule.Core.Offload;

/// <summary>
/// The Internet checksum (RFC 1071): a ones'-complement sum of 16-bit big-endian words. Sums are kept unfolded in
/// a ulong while they are added to, folded to 16 bits once at the end; what goes into a header is the folded
/// sum inverted (<see cref="Finish"/>), except for a checksum left to the kernel to complete (virtio-net's
/// NEEDS_CSUM), which holds the pseudo-header's folded sum as it is.
/// </summary>
public static class InetChecksum
{
    /// <summary>Adds <paramref name="data"/> to <paramref name="sum"/>; an odd last byte is a high half.</summary>
    public static ulong Add(ReadOnlySpan<byte> data, ulong sum = 0)
    {
        // The bulk in machine order, 32 bytes at a time: the ones'-complement sum does not depend on byte order
        // (RFC 1071, 2.B), so words summed as they lie in memory, folded to 16 bits and swapped, are the sum of
        // the big-endian words. Each 32-bit lane widens into 64 bits: no carry is ever lost.
        var bulk = data.Length & ~31;
        if (bulk > 0)
        {
            var acc = Vector256<ulong>.Zero;
            var words = MemoryMarshal.Cast<byte, uint>(data[..bulk]);
            for (var i = 0; i < words.Length; i += 8)
            {
                var v = Vector256.Create<uint>(words.Slice(i, 8));
                var (lo, hi) = Vector256.Widen(v);
                acc += lo + hi;
            }
            var native = Fold(Vector256.Sum(acc));
            sum += BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(native) : native;
        }
        var i8 = bulk;
        // The rest eight bytes at a time: four big-endian words added at once (carries collect in the upper bits).
        for (; i8 + 8 <= data.Length; i8 += 8)
        {
            var v = BinaryPrimitives.ReadUInt64BigEndian(data[i8..]);
            sum += (v >> 48) + ((v >> 32) & 0xFFFF) + ((v >> 16) & 0xFFFF) + (v & 0xFFFF);
        }
        for (; i8 + 1 < data.Length; i8 += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(data[i8..]);
        if (i8 < data.Length) sum += (ulong)data[i8] << 8;
        return sum;
    }

    /// <summary>The IPv4 pseudo-header's sum: addresses, protocol and the transport length.</summary>
    public static ulong PseudoHeader(ReadOnlySpan<byte> ipv4, byte protocol, int transportLength) =>
        Add(ipv4.Slice(12, 8)) + protocol + (uint)transportLength;

    /// <summary>A sum folded to 16 bits (not inverted).</summary>
    public static ushort Fold(ulong sum)
    {
        while (sum >> 16 != 0) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)sum;
    }

    /// <summary>The checksum field's value for a sum taken over everything it covers, the field read as zero.</summary>
    public static ushort Finish(ulong sum) => (ushort)~Fold(sum);

    /// <summary>Writes a fresh IPv4 header checksum (the header of <paramref name="ipv4"/> only).</summary>
    public static void SetIpv4(Span<byte> ipv4)
    {
        var ihl = (ipv4[0] & 0xF) * 4;
        ipv4[10] = 0;
        ipv4[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(ipv4[10..], Finish(Add(ipv4[..ihl])));
    }

    /// <summary>
    /// Writes a full transport checksum (TCP or UDP, at <paramref name="fieldOffset"/> into the transport header)
    /// for an IPv4 packet whose total length is already right. A UDP checksum that comes out zero is sent as
    /// 0xFFFF (RFC 768: zero means none).
    /// </summary>
    public static void SetTransport(Span<byte> ipv4, int fieldOffset)
    {
        var ihl = (ipv4[0] & 0xF) * 4;
        var total = BinaryPrimitives.ReadUInt16BigEndian(ipv4[2..]);
        var l4 = ipv4[ihl..total];
        l4[fieldOffset] = 0;
        l4[fieldOffset + 1] = 0;
        var c = Finish(Add(l4, PseudoHeader(ipv4, ipv4[9], l4.Length)));
        if (c == 0 && ipv4[9] == 17) c = 0xFFFF;
        BinaryPrimitives.WriteUInt16BigEndian(l4[fieldOffset..], c);
    }

    /// <summary>Whether a packet's IPv4 header checksum and its TCP or UDP checksum are both right.</summary>
    public static bool IsValid(ReadOnlySpan<byte> ipv4)
    {
        var ihl = (ipv4[0] & 0xF) * 4;
        if (Fold(Add(ipv4[..ihl])) != 0xFFFF) return false;
        var total = BinaryPrimitives.ReadUInt16BigEndian(ipv4[2..]);
        var l4 = ipv4[ihl..total];
        if (ipv4[9] == 17 && BinaryPrimitives.ReadUInt16BigEndian(l4[6..]) == 0) return true; // no UDP checksum
        return Fold(Add(l4, PseudoHeader(ipv4, ipv4[9], l4.Length))) == 0xFFFF;
    }
}
