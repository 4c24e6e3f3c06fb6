using System.Runtime.CompilerServices;
using System.Security.Cryptography;

namespace Capsule.Core;

/// <summary>
/// Sealing and opening an overlay datagram in place with AES-GCM, as WireGuard's data messages are
/// sealed: the nonce is the header's key id and counter, the header is associated data. Encrypted
/// mode encrypts the payload; authenticate-only leaves it plain and authenticates it with the header
/// (GMAC). The caller owns the key (one <see cref="AesGcm"/> per key, made once, used by one thread).
/// </summary>
public static class Aead
{
    public const int KeySize = 32;

    /// <summary>
    /// Seals <paramref name="datagram"/>: its header is written, its payload follows it, and
    /// <see cref="Wire.TagSize"/> bytes after the payload receive the tag. Returns the datagram's length.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Seal(AesGcm key, Span<byte> datagram, int payloadLength)
    {
        var header = datagram[..Wire.HeaderSize];
        var nonce = header.Slice(Wire.NonceAt, Wire.NonceSize);
        var payload = datagram.Slice(Wire.HeaderSize, payloadLength);
        var tag = datagram.Slice(Wire.HeaderSize + payloadLength, Wire.TagSize);
        if ((Wire.Mode)header[3] == Wire.Mode.Encrypted) key.Encrypt(nonce, payload, payload, tag, header);
        else key.Encrypt(nonce, [], [], tag, datagram[..(Wire.HeaderSize + payloadLength)]);
        return Wire.HeaderSize + payloadLength + Wire.TagSize;
    }

    /// <summary>
    /// Opens a whole datagram (header, payload, tag) whose header has been read: true when the tag
    /// verifies, the payload then plain in place. False leaves nothing to believe in it.
    /// </summary>
    public static bool Open(AesGcm key, Span<byte> datagram)
    {
        if (datagram.Length < Wire.HeaderSize + Wire.TagSize) return false;
        var n = datagram.Length - Wire.HeaderSize - Wire.TagSize;
        var header = datagram[..Wire.HeaderSize];
        var nonce = header.Slice(Wire.NonceAt, Wire.NonceSize);
        var payload = datagram.Slice(Wire.HeaderSize, n);
        var tag = datagram.Slice(Wire.HeaderSize + n, Wire.TagSize);
        try
        {
            if ((Wire.Mode)header[3] == Wire.Mode.Encrypted) key.Decrypt(nonce, payload, tag, payload, header);
            else key.Decrypt(nonce, [], tag, [], datagram[..(Wire.HeaderSize + n)]);
            return true;
        }
        catch (CryptographicException)
        {
            // .NET offers no non-throwing decrypt; a forged datagram costs an exception (counted as bad_tag).
            // Not only AuthenticationTagMismatchException: any failure of the cipher (OpenSSL's "cipher operation
            // failed" was seen when a test shared one AesGcm across threads) is a datagram not to believe, and
            // must not end the ingress thread.
            return false;
        }
    }

    /// <summary>A fresh random key (never logged; it travels only inside the control channel).</summary>
    public static byte[] NewKey() => RandomNumberGenerator.GetBytes(KeySize);

    /// <summary>A random key id, not 0: a restarted sender is unlikely to reuse one a receiver still has.</summary>
    public static uint NewKeyId()
    {
        Span<byte> b = stackalloc byte[4];
        uint id;
        do
        {
            RandomNumberGenerator.Fill(b);
            id = BitConverter.ToUInt32(b);
        } while (id == 0);
        return id;
    }
}
