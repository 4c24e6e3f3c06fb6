using System.Buffers.Binary;

namespace Capsule.Core.Tests;

/// <summary>Hand-built IPv4 packets and a small directory used across the test files.</summary>
static class Packets
{
    /// <summary>
    /// A well-formed IPv4 packet: version 4, IHL 5, total length = 20 + payload, TTL 64,
    /// protocol UDP, correct header checksum, given source and destination.
    /// </summary>
    public static byte[] Build(Locator src, Locator dst, int payload = 8, byte protocol = 17)
    {
        var p = new byte[20 + payload];
        p[0] = 0x45;                     // version 4, IHL 5 words
        p[1] = 0;                        // DSCP/ECN
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), 0x1234); // identification
        p[6] = 0x40;                     // DF
        p[8] = 64;                       // TTL
        p[9] = protocol;
        src.Write(p.AsSpan(12, 4));
        dst.Write(p.AsSpan(16, 4));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), Checksum(p.AsSpan(0, 20)));
        for (var i = 20; i < p.Length; i++) p[i] = (byte)(i * 7);
        return p;
    }

    static ushort Checksum(ReadOnlySpan<byte> header)
    {
        uint sum = 0;
        for (var i = 0; i < header.Length; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(header[i..]);
        while (sum > 0xFFFF) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }

    /// <summary>An overlay datagram: the 8-byte header (given epoch) followed by <paramref name="inner"/>.</summary>
    public static byte[] Wrap(byte[] inner, uint epoch = 0)
    {
        var d = new byte[Wire.HeaderSize + inner.Length];
        Wire.WriteHeader(d, Wire.Kind.Ipv4, epoch);
        inner.CopyTo(d, Wire.HeaderSize);
        return d;
    }
}

static class Dir
{
    public static readonly Prefix Pool = Prefix.Parse("100.64.0.0/16");
    public static HostRecord H1 => new("h1", Locator.Parse("10.0.0.1"), "10.0.0.1:7471");
    public static HostRecord H2 => new("h2", Locator.Parse("10.0.0.2"), "10.0.0.2:7471");
    public static HostRecord H3 => new("h3", Locator.Parse("10.0.0.3"), "10.0.0.3:7471");

    /// <summary>Applies an operation that must succeed and returns the new state.</summary>
    public static DirectoryState Ok(this DirectoryState.Result r)
    {
        Assert.True(r.Ok, $"expected success, got: {r.Error}");
        Assert.Null(r.Error);
        return r.State;
    }

    /// <summary>Asserts an operation failed, left the state untouched and spent no revision.</summary>
    public static string Fails(this DirectoryState before, DirectoryState.Result r)
    {
        Assert.False(r.Ok);
        Assert.NotNull(r.Error);
        Assert.Null(r.Change);
        Assert.Same(before, r.State);
        return r.Error!;
    }

    public static DirectoryState WithHosts(Prefix? pool = null, params HostRecord[] hosts)
    {
        var s = new DirectoryState(pool ?? Pool);
        foreach (var h in hosts) s = s.PutHost(h).Ok();
        return s;
    }
}
