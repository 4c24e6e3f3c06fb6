using System.Globalization;

namespace Capsule.Core;

/// <summary>
/// A size as people write it on a command line (`--memory 256M`): a whole number of bytes, or of KiB, MiB, GiB
/// or TiB with the suffix K, M, G or T (binary, as cgroups and `free` count; "Mi", "MB" and "MiB" say the same).
/// </summary>
public static class ByteSize
{
    public static long? Parse(string text)
    {
        var s = text.Trim();
        var digits = 0;
        while (digits < s.Length && char.IsAsciiDigit(s[digits])) digits++;
        if (digits == 0 || !long.TryParse(s.AsSpan(0, digits), NumberStyles.None, CultureInfo.InvariantCulture,
                out var n))
            return null;
        var shift = s[digits..].ToUpperInvariant() switch
        {
            "" or "B" => 0,
            "K" or "KB" or "KI" or "KIB" => 10,
            "M" or "MB" or "MI" or "MIB" => 20,
            "G" or "GB" or "GI" or "GIB" => 30,
            "T" or "TB" or "TI" or "TIB" => 40,
            _ => -1,
        };
        if (shift < 0 || n > long.MaxValue >> shift) return null;
        return n << shift;
    }
}
