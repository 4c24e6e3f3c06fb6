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

    /// <summary>
    /// An opened overlay datagram: the header (given epoch) followed by <paramref name="inner"/>, its tag cut off,
    /// as Forwarding.Inbound sees it.
    /// </summary>
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

    /// <summary>An update made by a writer that has just read the record (its current revision).</summary>
    public static DirectoryState.Result UpdateRead(this DirectoryState s, string name, string host, CapsuleState state,
        string? detail = null) =>
        s.UpdateCapsule(name, host, state, s.Capsules.TryGetValue(name, out var c) ? c.Revision : 1, detail);

    public static DirectoryState WithHosts(Prefix? pool = null, params HostRecord[] hosts)
    {
        var s = new DirectoryState(pool ?? Pool);
        foreach (var h in hosts) s = s.PutHost(h).Ok();
        return s;
    }
}

/// <summary>
/// Reference Internet checksums and packet builders for the ICMP and TCP tests, written
/// independently of the code under test (a modulo 0xFFFF one's-complement sum, not a fold).
/// </summary>
static class Inet
{
    /// <summary>
    /// RFC 1071 checksum of the concatenation of <paramref name="parts"/> (odd length padded with a zero byte).
    /// </summary>
    public static ushort RefChecksum(params byte[][] parts)
    {
        var all = parts.SelectMany(p => p).ToArray();
        ulong s = 0;
        for (var i = 0; i < all.Length; i += 2)
            s += (ulong)(all[i] << 8 | (i + 1 < all.Length ? all[i + 1] : 0));
        var r = s % 0xFFFF;
        if (r == 0 && s != 0) r = 0xFFFF; // one's complement: a non-zero sum never folds to +0
        return (ushort)~r;
    }

    /// <summary>The TCP checksum of <paramref name="segment"/> with its checksum field taken as zero.</summary>
    public static ushort RefTcpChecksum(Locator src, Locator dst, ReadOnlySpan<byte> segment)
    {
        var seg = segment.ToArray();
        if (seg.Length >= 18)
        {
            seg[16] = 0;
            seg[17] = 0;
        }
        var pseudo = new byte[12];
        src.Write(pseudo.AsSpan(0));
        dst.Write(pseudo.AsSpan(4));
        pseudo[9] = 6;
        BinaryPrimitives.WriteUInt16BigEndian(pseudo.AsSpan(10), (ushort)seg.Length);
        return RefChecksum(pseudo, seg);
    }

    /// <summary>
    /// An IPv4 packet with <paramref name="ipOptionWords"/> words of NOP options, the given
    /// fragment field (flags + offset) and payload; correct header checksum.
    /// </summary>
    public static byte[] Ip(Locator src, Locator dst, byte protocol, byte[] payload, int ipOptionWords = 0,
        ushort fragField = 0x4000, byte ttl = 64, ushort id = 0xBEEF)
    {
        var ihl = 20 + 4 * ipOptionWords;
        var p = new byte[ihl + payload.Length];
        p[0] = (byte)(0x40 | (ihl / 4));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)p.Length);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), id);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(6), fragField);
        p[8] = ttl;
        p[9] = protocol;
        src.Write(p.AsSpan(12));
        dst.Write(p.AsSpan(16));
        for (var i = 20; i < ihl; i++) p[i] = 1; // IP option NOP
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), RefChecksum(p[..ihl]));
        payload.CopyTo(p, ihl);
        return p;
    }

    public static byte[] Pattern(int n, int seed = 0) =>
        Enumerable.Range(0, n).Select(i => (byte)(i * 13 + 5 + seed)).ToArray();

    /// <summary>
    /// A TCP segment in an IPv4 packet; <paramref name="options"/> must be a multiple of 4 bytes.
    /// Both checksums are correct unless the caller changes bytes afterwards.
    /// </summary>
    public static byte[] Tcp(Locator src, ushort sport, Locator dst, ushort dport, uint seq, uint ack, byte flags,
        ushort window, byte[]? options = null, byte[]? payload = null, ushort fragField = 0x4000,
        int ipOptionWords = 0, ushort id = 0xBEEF)
    {
        options ??= [];
        payload ??= [];
        Assert.True(options.Length % 4 == 0 && options.Length <= 40, "test bug: TCP options must be whole words");
        var t = new byte[20 + options.Length + payload.Length];
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(0), sport);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(2), dport);
        BinaryPrimitives.WriteUInt32BigEndian(t.AsSpan(4), seq);
        BinaryPrimitives.WriteUInt32BigEndian(t.AsSpan(8), ack);
        t[12] = (byte)(((20 + options.Length) / 4) << 4);
        t[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(14), window);
        options.CopyTo(t, 20);
        payload.CopyTo(t, 20 + options.Length);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(16), RefTcpChecksum(src, dst, t));
        return Ip(src, dst, 6, t, ipOptionWords, fragField, id: id);
    }

    /// <summary>The timestamp option (kind 8, length 10) preceded by two NOPs, as Linux sends it.</summary>
    public static byte[] TsOption(uint tsVal, uint tsEcr)
    {
        var o = new byte[12];
        o[0] = 1;
        o[1] = 1;
        o[2] = 8;
        o[3] = 10;
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(4), tsVal);
        BinaryPrimitives.WriteUInt32BigEndian(o.AsSpan(8), tsEcr);
        return o;
    }

    public static int Ihl(ReadOnlySpan<byte> p) => (p[0] & 0xF) * 4;
}
