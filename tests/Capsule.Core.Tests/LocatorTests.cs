using System.Net;

namespace Capsule.Core.Tests;

public class LocatorTests
{
    [Fact]
    public void Format_and_parse_round_trip_for_every_uint()
    {
        Gen.UInt.Sample(u =>
        {
            var l = new Locator(u);
            var text = l.ToString();
            Assert.Equal(l, Locator.Parse(text));
            Assert.True(Locator.TryParse(text, out var t));
            Assert.Equal(u, t.Value);
            // The formatting is plain dotted decimal, the same as the framework's.
            Assert.Equal(new IPAddress([(byte)(u >> 24), (byte)(u >> 16), (byte)(u >> 8), (byte)u]).ToString(), text);
        }, iter: 20_000);
    }

    [Fact]
    public void Address_round_trip_for_every_uint()
    {
        Gen.UInt.Sample(u =>
        {
            var l = new Locator(u);
            Assert.Equal(l, Locator.FromAddress(l.ToAddress()));
        }, iter: 5_000);
    }

    [Theory]
    [InlineData("0.0.0.0", 0u)]
    [InlineData("100.64.0.2", 0x64400002u)]
    [InlineData("10.0.0.1", 0x0A000001u)]
    [InlineData("255.255.255.255", 0xFFFFFFFFu)]
    [InlineData("1.2.3.4", 0x01020304u)]
    public void Parse_gives_host_order_value(string text, uint value)
    {
        var l = Locator.Parse(text);
        Assert.Equal(value, l.Value);
        Assert.Equal(text, l.ToString());
    }

    [Fact]
    public void Read_and_write_are_big_endian()
    {
        byte[] wire = [100, 64, 1, 2];
        var l = Locator.Read(wire);
        Assert.Equal(0x64400102u, l.Value);
        Assert.Equal("100.64.1.2", l.ToString());

        var buf = new byte[6];
        new Locator(0xC0A80A01).Write(buf.AsSpan(1, 4));
        Assert.Equal(new byte[] { 0, 192, 168, 10, 1, 0 }, buf);
    }

    [Fact]
    public void Read_write_round_trip_for_every_uint()
    {
        Gen.UInt.Sample(u =>
        {
            Span<byte> b = stackalloc byte[4];
            new Locator(u).Write(b);
            Assert.Equal((byte)(u >> 24), b[0]);
            Assert.Equal((byte)u, b[3]);
            Assert.Equal(u, Locator.Read(b).Value);
        }, iter: 5_000);
    }

    [Theory]
    [InlineData("::1")]
    [InlineData("fe80::1")]
    [InlineData("::ffff:1.2.3.4")]
    [InlineData("2001:db8::1")]
    public void Parse_rejects_ipv6(string text)
    {
        Assert.False(Locator.TryParse(text, out var l));
        Assert.Equal(Locator.None, l);
        var ex = Assert.Throws<FormatException>(() => Locator.Parse(text));
        Assert.Contains(text, ex.Message);
        Assert.Contains("IPv4", ex.Message);
    }

    [Theory]
    [InlineData("")]
    [InlineData("host.example")]
    [InlineData("256.1.1.1")]
    [InlineData("1.2.3.4.5")]
    [InlineData("1..2.3")]
    [InlineData("-1.2.3.4")]
    [InlineData("1.2.3.4/24")]
    [InlineData("1.2.3.4:80")]
    [InlineData(" 1.2.3.4")]
    [InlineData("1.2.3.4 ")]
    [InlineData("4294967296")]
    public void Parse_rejects_garbage_with_a_clear_message(string text)
    {
        Assert.False(Locator.TryParse(text, out _));
        var ex = Assert.Throws<FormatException>(() => Locator.Parse(text));
        Assert.Contains($"'{text}'", ex.Message);
        Assert.Contains("a.b.c.d", ex.Message);
    }

    [Fact]
    public void TryParse_null_is_false()
    {
        Assert.False(Locator.TryParse(null, out var l));
        Assert.True(l.IsNone);
    }

    [Fact]
    public void Parse_accepts_only_dotted_quad_decimal()
    {
        string[] notDottedQuad = ["10", "1.2.3", "127.1", "2130706433", "0x7f.0.0.1", "010.0.0.1", "100.064.0.0"];
        var accepted = notDottedQuad.Where(s => Locator.TryParse(s, out _))
            .Select(s => $"{s} -> {Locator.Parse(s)}").ToList();
        Assert.True(accepted.Count == 0, "accepted: " + string.Join(", ", accepted));
    }

    [Fact]
    public void Prefix_parse_rejects_non_dotted_quad_networks()
    {
        string[] bad = ["100.064.0.0/16", "100.64/16", "10/8"];
        foreach (var t in bad)
        {
            var ex = Assert.Throws<FormatException>(() => Prefix.Parse(t));
            Assert.DoesNotContain("did you mean", ex.Message);
        }
    }

    [Fact]
    public void FromAddress_rejects_ipv6()
    {
        var ex = Assert.Throws<ArgumentException>(() => Locator.FromAddress(IPAddress.IPv6Loopback));
        Assert.Contains("IPv4", ex.Message);
        Assert.Equal(new Locator(0x7F000001), Locator.FromAddress(IPAddress.Loopback));
    }

    [Fact]
    public void None_and_ordering()
    {
        Assert.True(Locator.None.IsNone);
        Assert.True(default(Locator).IsNone);
        Assert.False(Locator.Parse("0.0.0.1").IsNone);
        Assert.True(Locator.Parse("10.0.0.2").CompareTo(Locator.Parse("10.0.0.10")) < 0);
        Assert.True(Locator.Parse("128.0.0.0").CompareTo(Locator.Parse("127.255.255.255")) > 0); // unsigned compare
        Assert.Equal(0, Locator.Parse("1.2.3.4").CompareTo(new Locator(0x01020304)));
    }

    [Fact]
    public void Prefix_parse_accepts_cgnat_16()
    {
        var p = Prefix.Parse("100.64.0.0/16");
        Assert.Equal(Locator.Parse("100.64.0.0"), p.Network);
        Assert.Equal(16, p.Length);
        Assert.Equal(0xFFFF0000u, p.Mask);
        Assert.Equal(65536UL, p.Size);
        Assert.Equal("100.64.0.0/16", p.ToString());
        Assert.Equal(Locator.Parse("100.64.0.5"), p.At(5));
        Assert.Equal(Locator.Parse("100.64.1.0"), p.At(256));
    }

    [Theory]
    [InlineData("10.0.0.0/8", 8, 16777216UL)]
    [InlineData("192.168.10.0/24", 24, 256UL)]
    [InlineData("10.1.0.0/29", 29, 8UL)]
    [InlineData("10.1.0.4/30", 30, 4UL)]
    public void Prefix_parse_accepts_lengths_8_to_30(string text, int len, ulong size)
    {
        var p = Prefix.Parse(text);
        Assert.Equal(len, p.Length);
        Assert.Equal(size, p.Size);
        Assert.Equal(text, p.ToString());
    }

    [Theory]
    [InlineData("100.64.1.0/16", "100.64.0.0/16")]
    [InlineData("100.64.0.1/16", "100.64.0.0/16")]
    [InlineData("10.1.2.3/8", "10.0.0.0/8")]
    [InlineData("10.1.0.5/29", "10.1.0.0/29")]
    public void Prefix_parse_rejects_host_bits_and_suggests_the_network(string text, string suggestion)
    {
        var ex = Assert.Throws<FormatException>(() => Prefix.Parse(text));
        Assert.Contains("host bits", ex.Message);
        Assert.Contains($"did you mean {suggestion}?", ex.Message);
    }

    [Theory]
    [InlineData("100.64.0.0")]
    [InlineData("100.64.0.0/")]
    [InlineData("100.64.0.0/7")]
    [InlineData("100.64.0.0/0")]
    [InlineData("100.64.0.0/31")]
    [InlineData("100.64.0.0/32")]
    [InlineData("100.64.0.0/33")]
    [InlineData("100.64.0.0/-16")]
    [InlineData("100.64.0.0/abc")]
    [InlineData("100.64.0.0/16/3")]
    [InlineData("/16")]
    [InlineData("garbage/16")]
    [InlineData("::/16")]
    [InlineData("")]
    public void Prefix_parse_rejects_bad_prefixes(string text)
    {
        var ex = Assert.Throws<FormatException>(() => Prefix.Parse(text));
        Assert.Contains($"'{text}'", ex.Message);
        Assert.Contains("8..30", ex.Message);
    }

    [Fact]
    public void Prefix_contains()
    {
        var p = Prefix.Parse("100.64.0.0/16");
        Assert.True(p.Contains(Locator.Parse("100.64.0.0")));
        Assert.True(p.Contains(Locator.Parse("100.64.0.2")));
        Assert.True(p.Contains(Locator.Parse("100.64.255.255")));
        Assert.False(p.Contains(Locator.Parse("100.65.0.0")));
        Assert.False(p.Contains(Locator.Parse("100.63.255.255")));
        Assert.False(p.Contains(Locator.Parse("10.0.0.1")));
        Assert.False(p.Contains(Locator.None));

        var q = Prefix.Parse("10.1.0.8/29");
        Assert.True(q.Contains(Locator.Parse("10.1.0.8")));
        Assert.True(q.Contains(Locator.Parse("10.1.0.15")));
        Assert.False(q.Contains(Locator.Parse("10.1.0.7")));
        Assert.False(q.Contains(Locator.Parse("10.1.0.16")));
    }

    [Fact]
    public void Prefix_contains_matches_arithmetic_definition()
    {
        // For any network/length in range and any address: contained iff it lies in [network, network + size).
        Gen.Select(Gen.UInt, Gen.Int[8, 30], Gen.UInt).Sample((raw, len, addr) =>
        {
            var mask = uint.MaxValue << (32 - len);
            var p = Prefix.Parse($"{new Locator(raw & mask)}/{len}");
            var inRange = addr >= p.Network.Value && addr - p.Network.Value < p.Size;
            Assert.Equal(inRange, p.Contains(new Locator(addr)));
            Assert.True(p.Contains(p.At((uint)(p.Size - 1))));
            Assert.True(p.Contains(p.Network));
        }, iter: 5_000);
    }
}
