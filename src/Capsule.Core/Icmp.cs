using System.Buffers.Binary;
using Capsule.Core.Offload;

namespace Capsule.Core;

/// <summary>
/// The answer an ordinary router gives for an address it cannot reach: ICMP destination
/// unreachable (RFC 792, RFC 1812 §4.3.2), quoting the offending packet's header and first
/// 8 bytes of payload. The gateway sends it for a locator that no capsule holds.
/// </summary>
public static class Icmp
{
    public const byte DestinationUnreachable = 3;
    public const byte HostUnreachable = 1;
    /// <summary>Largest answer: our headers plus a maximal quoted header (60) and 8 bytes.</summary>
    public const int MaxAnswer = 20 + 8 + 60 + 8;

    /// <summary>
    /// Writes the unreachable answer to <paramref name="original"/> into <paramref name="answer"/>;
    /// returns its length, or 0 where no answer is due (RFC 1812: never about an ICMP error, a
    /// fragment other than the first, or a broadcast or multicast source).
    /// </summary>
    public static int WriteHostUnreachable(ReadOnlySpan<byte> original, Locator from, Span<byte> answer)
    {
        if (!Ipv4.IsValid(original)) return 0;
        var ihl = (original[0] & 0xF) * 4;
        var fragOffset = BinaryPrimitives.ReadUInt16BigEndian(original[6..]) & 0x1FFF;
        if (fragOffset != 0) return 0;
        var src = Ipv4.Source(original);
        var dst = Ipv4.Destination(original);
        // RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7: only about a datagram from one real host to one host.
        if (src.IsNone || src.Value >> 28 >= 0xE || src.Value >> 24 == 127) return 0;
        if (dst.Value >> 28 == 0xE || dst.Value == uint.MaxValue) return 0;
        if (Ipv4.Protocol(original) == 1 && original.Length > ihl && original[ihl] is not (0 or 8 or 13 or 15 or 17))
            return 0; // an ICMP error itself
        var quote = Math.Min(original.Length, ihl + 8);
        var total = 20 + 8 + quote;
        if (answer.Length < total) return 0;
        var a = answer[..total];
        a.Clear();
        a[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(a[2..], (ushort)total);
        a[8] = 64;  // TTL
        a[9] = 1;   // ICMP
        from.Write(a[12..]);
        src.Write(a[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(a[10..], Checksum(a[..20]));
        var icmp = a[20..];
        icmp[0] = DestinationUnreachable;
        icmp[1] = HostUnreachable;
        original[..quote].CopyTo(icmp[8..]);
        BinaryPrimitives.WriteUInt16BigEndian(icmp[2..], Checksum(icmp));
        return total;
    }

    /// <summary>The Internet checksum (RFC 1071) of <paramref name="data"/>.</summary>
    public static ushort Checksum(ReadOnlySpan<byte> data) => InetChecksum.Finish(InetChecksum.Add(data));
}
