using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Net;

using System.Runtime.CompilerServices;

namespace Capsule.Core;

/// <summary>
/// An IPv4 address held as a host-order integer: a capsule's locator (seed Fig. 2B) or a host's
/// underlay address. A value type so the data plane can compare and hash it without allocating.
/// </summary>
public readonly record struct Locator(uint Value) : IComparable<Locator>
{
    public static Locator None => default;
    public bool IsNone => Value == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Locator Read(ReadOnlySpan<byte> fourBytes) => new(BinaryPrimitives.ReadUInt32BigEndian(fourBytes));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(Span<byte> fourBytes) => BinaryPrimitives.WriteUInt32BigEndian(fourBytes, Value);

    public static Locator Parse(string text) =>
        TryParse(text, out var l) ? l
            : throw new FormatException($"'{text}' is not an IPv4 address (expected a.b.c.d)");

    public static bool TryParse([NotNullWhen(true)] string? text, out Locator locator)
    {
        // Exactly four decimal parts of 0..255: IPAddress.TryParse would also take "10", "127.1",
        // hex and octal ("010" is 8), which silently name a different address than the one meant.
        locator = default;
        if (text is null) return false;
        var s = text.AsSpan();
        uint value = 0;
        for (var part = 0; part < 4; part++)
        {
            var dot = part < 3 ? s.IndexOf('.') : s.Length;
            if (dot <= 0 || dot > 3) return false;
            var digits = s[..dot];
            if (digits.Length > 1 && digits[0] == '0') return false;
            uint octet = 0;
            foreach (var c in digits)
            {
                if (!char.IsAsciiDigit(c)) return false;
                octet = octet * 10 + (uint)(c - '0');
            }
            if (octet > 255) return false;
            value = (value << 8) | octet;
            s = part < 3 ? s[(dot + 1)..] : s[dot..];
        }
        if (!s.IsEmpty) return false;
        locator = new Locator(value);
        return true;
    }

    public static Locator FromAddress(IPAddress ip)
    {
        Span<byte> b = stackalloc byte[4];
        if (ip.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork || !ip.TryWriteBytes(b, out _))
            throw new ArgumentException($"{ip} is not an IPv4 address", nameof(ip));
        return Read(b);
    }

    public IPAddress ToAddress()
    {
        Span<byte> b = stackalloc byte[4];
        Write(b);
        return new IPAddress(b);
    }

    public int CompareTo(Locator other) => Value.CompareTo(other.Value);

    public override string ToString() => $"{Value >> 24}.{(Value >> 16) & 0xFF}.{(Value >> 8) & 0xFF}.{Value & 0xFF}";
}

/// <summary>An IPv4 prefix such as 100.64.0.0/16.</summary>
public readonly record struct Prefix(Locator Network, int Length)
{
    public uint Mask => Length == 0 ? 0u : uint.MaxValue << (32 - Length);
    public ulong Size => 1UL << (32 - Length);
    public bool Contains(Locator l) => (l.Value & Mask) == Network.Value;
    public Locator At(uint offset) => new(Network.Value + offset);

    public static bool TryParse(string? text, out Prefix prefix)
    {
        prefix = default;
        if (text is null) return false;
        try
        {
            prefix = Parse(text);
            return true;
        }
        catch (FormatException) { return false; }
    }

    public static Prefix Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var slash = text.IndexOf('/');
        var lenText = slash < 0 ? "" : text[(slash + 1)..];
        if (slash < 0 || !Locator.TryParse(text[..slash], out var net) || lenText.Length is 0 or > 2
            || !lenText.All(char.IsAsciiDigit) || !int.TryParse(lenText, out var len) || len is < 8 or > 30)
            throw new FormatException($"'{text}' is not an IPv4 prefix (expected a.b.c.d/len with len 8..30)");
        var p = new Prefix(net, len);
        if ((net.Value & ~p.Mask) != 0)
            throw new FormatException(
                $"'{text}' has host bits set; did you mean {new Locator(net.Value & p.Mask)}/{len}?");
        return p;
    }

    public override string ToString() => $"{Network}/{Length}";
}
