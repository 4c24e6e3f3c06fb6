using System.Buffers.Binary;

namespace Capsule.Core.Tests;

public class WireTests
{
    [Fact]
    public void Constants()
    {
        Assert.Equal(20, Wire.HeaderSize);
        Assert.Equal(16, Wire.TagSize);
        Assert.Equal(64, Wire.Overhead);
        Assert.Equal(0xCA, Wire.Magic);
        Assert.Equal(2, Wire.Version);
        Assert.Equal(1, (int)Wire.Kind.Ipv4);
    }

    [Fact]
    public void Header_bytes_are_exact()
    {
        var b = new byte[20];
        Wire.WriteHeader(b, Wire.Kind.Ipv4, 0x01020304, Wire.Mode.Encrypted, 0x0A0B0C0D, 0x1122334455667788);
        Assert.Equal(new byte[] { 0xCA, 2, 1, 1, 1, 2, 3, 4, 0x0A, 0x0B, 0x0C, 0x0D,
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 }, b);

        Wire.WriteHeader(b, Wire.Kind.Ipv4, 0xDEADBEEF, Wire.Mode.AuthenticateOnly, 1, 2);
        Assert.Equal(new byte[] { 0xCA, 2, 1, 2, 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2 }, b);
    }

    [Fact]
    public void WriteHeader_touches_only_its_twenty_bytes()
    {
        var b = Enumerable.Repeat((byte)0x55, 24).ToArray();
        Wire.WriteHeader(b.AsSpan(2), Wire.Kind.Ipv4, 7, Wire.Mode.Encrypted, 9, 3);
        Assert.Equal(
            new byte[] { 0x55, 0x55, 0xCA, 2, 1, 1, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 3, 0x55, 0x55 },
            b);
    }

    [Fact]
    public void Property_write_then_read_round_trips_every_field()
    {
        Gen.Select(Gen.UInt, Gen.UInt, Gen.ULong, Gen.Bool).Sample((epoch, key, counter, enc) =>
        {
            var b = new byte[Wire.HeaderSize];
            var mode = enc ? Wire.Mode.Encrypted : Wire.Mode.AuthenticateOnly;
            Wire.WriteHeader(b, Wire.Kind.Ipv4, epoch, mode, key, counter);
            Assert.Equal(DropReason.None, Wire.TryReadHeader(b, out Wire.Header h));
            Assert.Equal(new Wire.Header(Wire.Kind.Ipv4, mode, epoch, key, counter), h);
            Assert.Equal(epoch, BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(4)));
            Assert.Equal([0xCA, 2, 1, (byte)mode], b[..4]);
        }, iter: 10_000);
    }

    [Fact]
    public void Header_followed_by_payload_reads_fine()
    {
        var d = Packets.Wrap(Packets.Build(new Locator(1), new Locator(2)), 42);
        Assert.Equal(DropReason.None, Wire.TryReadHeader(d, out _, out var epoch));
        Assert.Equal(42u, epoch);
    }

    static byte[] Good(uint epoch = 5)
    {
        var b = new byte[Wire.HeaderSize];
        Wire.WriteHeader(b, Wire.Kind.Ipv4, epoch);
        return b;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(19)]
    public void Short_datagram_is_malformed(int len)
    {
        Assert.Equal(DropReason.Malformed, Wire.TryReadHeader(Good().AsSpan(0, len), out _, out var e));
        Assert.Equal(0u, e);
    }

    [Theory]
    [InlineData(0x00)]
    [InlineData(0xCB)]
    [InlineData(0xAC)]
    public void Wrong_magic_is_malformed(byte magic)
    {
        var b = Good();
        b[0] = magic;
        Assert.Equal(DropReason.Malformed, Wire.TryReadHeader(b, out _, out _));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(0xFF)]
    public void Wrong_version_is_bad_version(byte version)
    {
        var b = Good();
        b[1] = version;
        Assert.Equal(DropReason.BadVersion, Wire.TryReadHeader(b, out _, out var e));
        Assert.Equal(0u, e);
    }

    [Fact]
    public void Wrong_magic_wins_over_wrong_version()
    {
        var b = Good();
        b[0] = 0;
        b[1] = 9;
        Assert.Equal(DropReason.Malformed, Wire.TryReadHeader(b, out _, out _));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(0x81)]
    public void Unknown_kind_is_malformed(byte kind)
    {
        var b = Good();
        b[2] = kind;
        Assert.Equal(DropReason.Malformed, Wire.TryReadHeader(b, out _, out var e));
        Assert.Equal(0u, e);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(0x81)]
    [InlineData(0xFF)]
    public void Flags_other_than_one_mode_are_malformed(byte flags)
    {
        var b = Good();
        b[3] = flags;
        Assert.Equal(DropReason.Malformed, Wire.TryReadHeader(b, out _, out _));
    }

    /// <summary>The header rules restated independently, as an oracle.</summary>
    static DropReason Spec(byte[] d)
    {
        if (d.Length < 20 || d[0] != 0xCA) return DropReason.Malformed;
        if (d[1] != 2) return DropReason.BadVersion;
        if (d[2] != 1 || d[3] is not (1 or 2)) return DropReason.Malformed;
        return DropReason.None;
    }

    // Bytes biased towards the interesting values so every branch gets hit.
    static readonly Gen<byte> HeaderishByte = Gen.OneOf<byte>(Gen.Byte, Gen.OneOf<byte>(0xCA, 2, 1, 0));

    [Fact]
    public void Property_TryReadHeader_never_throws_and_matches_the_spec()
    {
        Gen.OneOf(Gen.Byte.Array[0, 40], HeaderishByte.Array[0, 24]).Sample(d =>
        {
            var r = Wire.TryReadHeader(d, out var kind, out var epoch);
            Assert.Equal(Spec(d), r);
            if (r == DropReason.None)
            {
                Assert.Equal(Wire.Kind.Ipv4, kind);
                Assert.Equal(BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(4)), epoch);
            }
            else Assert.Equal(0u, epoch);
        }, iter: 20_000);
    }
}

public class Ipv4Tests
{
    static readonly Locator A = Locator.Parse("100.64.0.2");
    static readonly Locator B = Locator.Parse("100.64.0.3");

    [Fact]
    public void Hand_built_header_is_valid_and_fields_read_right()
    {
        // 20-byte header, no payload, typed out byte by byte.
        byte[] p =
        [
            0x45, 0x00, 0x00, 0x14,   // v4 IHL5, TOS, total length 20
            0xab, 0xcd, 0x40, 0x00,   // id, DF
            0x40, 0x06, 0x00, 0x00,   // TTL 64, TCP, checksum (not checked)
            100, 64, 0, 2,            // source
            100, 64, 7, 9,            // destination
        ];
        Assert.True(Ipv4.IsValid(p));
        Assert.Equal(A, Ipv4.Source(p));
        Assert.Equal(Locator.Parse("100.64.7.9"), Ipv4.Destination(p));
        Assert.Equal(6, Ipv4.Protocol(p));
    }

    [Fact]
    public void Builder_packet_is_valid()
    {
        var p = Packets.Build(A, B, payload: 100, protocol: 6);
        Assert.Equal(120, p.Length);
        Assert.True(Ipv4.IsValid(p));
        Assert.Equal(A, Ipv4.Source(p));
        Assert.Equal(B, Ipv4.Destination(p));
        Assert.Equal(6, Ipv4.Protocol(p));
    }

    [Fact]
    public void Header_with_options_is_valid()
    {
        // IHL 6 (24 bytes) plus 4 bytes payload.
        var p = new byte[28];
        p[0] = 0x46;
        p[3] = 28;
        A.Write(p.AsSpan(12));
        B.Write(p.AsSpan(16));
        Assert.True(Ipv4.IsValid(p));
        Assert.Equal(A, Ipv4.Source(p));
    }

    [Theory]
    [InlineData(0x65)] // IPv6-ish version
    [InlineData(0x05)]
    [InlineData(0x55)]
    [InlineData(0xF5)]
    public void Wrong_version_is_invalid(byte vihl)
    {
        var p = Packets.Build(A, B);
        p[0] = vihl;
        Assert.False(Ipv4.IsValid(p));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]
    public void Ihl_below_five_is_invalid(int ihl)
    {
        var p = Packets.Build(A, B);
        p[0] = (byte)(0x40 | ihl);
        Assert.False(Ipv4.IsValid(p));
    }

    [Fact]
    public void Ihl_beyond_length_is_invalid()
    {
        // 40 bytes with total length 40, but IHL 15 claims a 60-byte header.
        var p = Packets.Build(A, B, payload: 20);
        p[0] = 0x4F;
        Assert.False(Ipv4.IsValid(p));
        // IHL 10 (40 bytes) fits exactly and is accepted.
        p[0] = 0x4A;
        Assert.True(Ipv4.IsValid(p));
    }

    [Fact]
    public void Total_length_mismatch_is_invalid()
    {
        var p = Packets.Build(A, B, payload: 8); // 28 bytes
        Assert.True(Ipv4.IsValid(p));
        Assert.False(Ipv4.IsValid(p.AsSpan(0, 27)));     // short read
        var padded = new byte[32];
        p.CopyTo(padded, 0);
        Assert.False(Ipv4.IsValid(padded));              // padded read
        p[3] = 29;
        Assert.False(Ipv4.IsValid(p));                   // header lies
    }

    [Fact]
    public void Too_short_is_invalid()
    {
        Assert.False(Ipv4.IsValid([]));
        var p = Packets.Build(A, B, payload: 0);
        Assert.False(Ipv4.IsValid(p.AsSpan(0, 19)));
    }

    [Fact]
    public void Property_IsValid_never_throws_and_matches_the_spec()
    {
        var gen = Gen.OneOf(
            Gen.Byte.Array[0, 64],
            Gen.Select(Gen.Byte.Array[20, 64], Gen.Byte, (a, v) =>
            {
                a[0] = (byte)(0x40 | (v & 0x0F));
                a[2] = 0;
                a[3] = (byte)a.Length;
                return a;
            }));
        gen.Sample(p =>
        {
            var expected = p.Length >= 20 && p[0] >> 4 == 4 && (p[0] & 0xF) >= 5 && (p[0] & 0xF) * 4 <= p.Length
                && (p[2] << 8 | p[3]) == p.Length;
            Assert.Equal(expected, Ipv4.IsValid(p));
        }, iter: 20_000);
    }
}
