using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Capsule.Core;

/// <summary>
/// The overlay header that precedes each wrapped packet inside the host-to-host UDP datagram
/// (seed Fig. 8, pkt'). Eight bytes, all in network order; docs/wire-format.md is the reference.
/// <code>
///  0        1        2        3
///  magic    version  kind     flags
///  route epoch (u32: low bits of the directory revision the sender routed by)
/// </code>
/// </summary>
public static class Wire
{
    public const byte Magic = 0xCA;
    public const byte Version = 1;
    public const int HeaderSize = 8;
    public const int DefaultPort = 7470;

    /// <summary>Outer IPv4 (20) + UDP (8) + our header: what wrapping adds to every packet.</summary>
    public const int Overhead = 20 + 8 + HeaderSize;

    public enum Kind : byte { Ipv4 = 1 }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WriteHeader(Span<byte> dst, Kind kind, uint epoch)
    {
        // One 8-byte store: magic, version, kind, flags=0, epoch.
        ulong word = Magic | ((ulong)Version << 8) | ((ulong)kind << 16)
            | ((ulong)BinaryPrimitives.ReverseEndianness(epoch) << 32);
        BinaryPrimitives.WriteUInt64LittleEndian(dst, word);
    }

    /// <summary>Checks the header and returns the payload, or the reason it must be dropped.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static DropReason TryReadHeader(ReadOnlySpan<byte> datagram, out Kind kind, out uint epoch)
    {
        kind = 0;
        epoch = 0;
        if (datagram.Length < HeaderSize || datagram[0] != Magic) return DropReason.Malformed;
        if (datagram[1] != Version) return DropReason.BadVersion;
        kind = (Kind)datagram[2];
        if (kind != Kind.Ipv4 || datagram[3] != 0) return DropReason.Malformed;
        epoch = BinaryPrimitives.ReadUInt32BigEndian(datagram[4..]);
        return DropReason.None;
    }
}

/// <summary>The few IPv4 header fields the data plane reads; nothing is copied.</summary>
public static class Ipv4
{
    public const int MinHeader = 20;

    /// <summary>
    /// Accepts a packet whose version is 4, whose header length is sane and whose total length
    /// matches what was received (a short or padded read means a broken packet, not a smaller one).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsValid(ReadOnlySpan<byte> p)
    {
        if (p.Length < MinHeader) return false;
        var vihl = p[0];
        if (vihl >> 4 != 4) return false;
        var ihl = (vihl & 0xF) * 4;
        if (ihl < MinHeader || ihl > p.Length) return false;
        return BinaryPrimitives.ReadUInt16BigEndian(p[2..]) == p.Length;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Locator Source(ReadOnlySpan<byte> p) => Locator.Read(p.Slice(12, 4));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Locator Destination(ReadOnlySpan<byte> p) => Locator.Read(p.Slice(16, 4));

    public static byte Protocol(ReadOnlySpan<byte> p) => p[9];
}
