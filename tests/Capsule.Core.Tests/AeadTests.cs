using System.Security.Cryptography;

namespace Capsule.Core.Tests;

public class AeadTests
{
    static readonly byte[] KeyBytes = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();

    static byte[] Sealed(byte[] inner, Wire.Mode mode, uint keyId = 7, ulong counter = 42, byte[]? key = null)
    {
        var d = new byte[Wire.HeaderSize + inner.Length + Wire.TagSize];
        Wire.WriteHeader(d, Wire.Kind.Ipv4, 3, mode, keyId, counter);
        inner.CopyTo(d, Wire.HeaderSize);
        using var aes = new AesGcm(key ?? KeyBytes, Wire.TagSize);
        Assert.Equal(d.Length, Aead.Seal(aes, d, inner.Length));
        return d;
    }

    static readonly byte[] Inner = Packets.Build(Locator.Parse("100.64.0.2"), Locator.Parse("100.64.0.3"), 100);

    [Theory]
    [InlineData(Wire.Mode.Encrypted)]
    [InlineData(Wire.Mode.AuthenticateOnly)]
    public void Sealed_then_opened_gives_the_packet_back(Wire.Mode mode)
    {
        var d = Sealed(Inner, mode);
        var payload = d.AsSpan(Wire.HeaderSize, Inner.Length);
        // Encrypted hides the packet; authenticate-only leaves it readable on the wire.
        Assert.Equal(mode == Wire.Mode.AuthenticateOnly, payload.SequenceEqual(Inner));
        using var aes = new AesGcm(KeyBytes, Wire.TagSize);
        Assert.True(Aead.Open(aes, d));
        Assert.Equal(Inner, d.AsSpan(Wire.HeaderSize, Inner.Length).ToArray());
    }

    [Theory]
    [InlineData(Wire.Mode.Encrypted)]
    [InlineData(Wire.Mode.AuthenticateOnly)]
    public void Property_any_flipped_bit_fails_the_tag(Wire.Mode mode)
    {
        var good = Sealed(Inner, mode);
        Gen.Select(Gen.Int[0, good.Length - 1], Gen.Int[0, 7]).Sample((i, bit) =>
        {
            // A key of its own per sample: CsCheck samples on several threads, and an AesGcm is for one thread
            // at a time (as in the engine: send keys on the egress thread, receive keys on the ingress thread).
            using var aes = new AesGcm(KeyBytes, Wire.TagSize);
            var d = good.ToArray();
            d[i] ^= (byte)(1 << bit);
            Assert.False(Aead.Open(aes, d));
        }, iter: 2_000);
    }

    [Fact]
    public void Wrong_key_short_datagram_and_swapped_mode_fail()
    {
        var other = KeyBytes.Select(b => (byte)(b ^ 0xFF)).ToArray();
        using var aes = new AesGcm(KeyBytes, Wire.TagSize);
        Assert.False(Aead.Open(aes, Sealed(Inner, Wire.Mode.Encrypted, key: other)));
        Assert.False(Aead.Open(aes, new byte[Wire.HeaderSize + Wire.TagSize - 1]));
        var d = Sealed(Inner, Wire.Mode.AuthenticateOnly);
        d[3] = (byte)Wire.Mode.Encrypted;
        Assert.False(Aead.Open(aes, d));
    }

    [Fact]
    public void An_empty_payload_seals_too()
    {
        var d = Sealed([], Wire.Mode.Encrypted);
        using var aes = new AesGcm(KeyBytes, Wire.TagSize);
        Assert.True(Aead.Open(aes, d));
    }

    [Fact]
    public void New_keys_are_random_and_ids_never_zero()
    {
        Assert.Equal(Aead.KeySize, Aead.NewKey().Length);
        Assert.NotEqual(Aead.NewKey(), Aead.NewKey());
        for (var i = 0; i < 1000; i++) Assert.NotEqual(0u, Aead.NewKeyId());
    }
}
