using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Capsule.Core;

/// <summary>
/// The overlay header that precedes each wrapped packet inside the host-to-host UDP datagram
/// (seed Fig. 8, pkt'), version 2: twenty bytes in network order, then the payload, then a 16-byte
/// AES-GCM tag (see <see cref="Aead"/>). docs/wire-format.md is the reference.
/// <code>
///  0        1        2        3
///  magic    version  kind     flags (mode)
///  route epoch (u32: low bits of the directory revision the sender routed by)
///  key id (u32: which of the sending host's keys sealed it)
///  counter (u64: per key, never repeats)
/// </code>
/// Key id and counter are adjacent so that they are the 12-byte GCM nonce as they stand.
/// </summary>
public static class Wire
{
    public const byte Magic = 0xCA;
    public const byte Version = 2;
    public const int HeaderSize = 20;
    public const int TagSize = 16;
    public const int NonceAt = 8;
    public const int NonceSize = 12;
    public const int DefaultPort = 7470;

    /// <summary>Outer IPv4 (20) + UDP (8) + our header + the tag: what wrapping adds to every packet.</summary>
    public const int Overhead = 20 + 8 + HeaderSize + TagSize;

    public enum Kind : byte { Ipv4 = 1 }

    /// <summary>The flags byte: exactly one mode; the tag covers it, so it cannot be flipped on the way.</summary>
    public enum Mode : byte
    {
        /// <summary>Payload encrypted, header authenticated (AES-GCM).</summary>
        Encrypted = 1,
        /// <summary>Payload plain; header and payload authenticated (GMAC).</summary>
        AuthenticateOnly = 2,
    }

    /// <summary>The fields of a header that passed TryReadHeader.</summary>
    public readonly record struct Header(Kind Kind, Mode Mode, uint Epoch, uint KeyId, ulong Counter);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void WriteHeader(Span<byte> dst, Kind kind, uint epoch, Mode mode = Mode.Encrypted, uint keyId = 0,
        ulong counter = 0)
    {
        // One 8-byte store for magic, version, kind, flags and epoch; then the nonce.
        ulong word = Magic | ((ulong)Version << 8) | ((ulong)kind << 16) | ((ulong)mode << 24)
            | ((ulong)BinaryPrimitives.ReverseEndianness(epoch) << 32);
        BinaryPrimitives.WriteUInt64LittleEndian(dst, word);
        BinaryPrimitives.WriteUInt32BigEndian(dst[8..], keyId);
        BinaryPrimitives.WriteUInt64BigEndian(dst[12..], counter);
    }

    /// <summary>Checks the header; on success <paramref name="h"/> holds its fields, else the drop reason.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static DropReason TryReadHeader(ReadOnlySpan<byte> datagram, out Header h)
    {
        h = default;
        if (datagram.Length < HeaderSize || datagram[0] != Magic) return DropReason.Malformed;
        if (datagram[1] != Version) return DropReason.BadVersion;
        var kind = (Kind)datagram[2];
        var mode = (Mode)datagram[3];
        if (kind != Kind.Ipv4 || mode is not (Mode.Encrypted or Mode.AuthenticateOnly)) return DropReason.Malformed;
        h = new Header(kind, mode, BinaryPrimitives.ReadUInt32BigEndian(datagram[4..]),
            BinaryPrimitives.ReadUInt32BigEndian(datagram[8..]), BinaryPrimitives.ReadUInt64BigEndian(datagram[12..]));
        return DropReason.None;
    }

    /// <summary>The routing fields alone (kind and epoch) of a header.</summary>
    public static DropReason TryReadHeader(ReadOnlySpan<byte> datagram, out Kind kind, out uint epoch)
    {
        var r = TryReadHeader(datagram, out Header h);
        (kind, epoch) = (h.Kind, h.Epoch);
        return r;
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
