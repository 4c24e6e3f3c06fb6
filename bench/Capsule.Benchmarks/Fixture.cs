using System.Buffers.Binary;
using Capsule.Core;

namespace Capsule.Benchmarks;

/// <summary>
/// Directory states and packets built the way the agent would see them: hosts registered, capsules
/// allocated through <see cref="DirectoryState.AllocateCapsule"/> (so locators come from the pool)
/// and set Running, since only running capsules route.
/// </summary>
static class Fixture
{
    public static readonly Prefix Pool = Prefix.Parse("100.64.0.0/16");

    public static string HostName(int i) => $"h{i}";
    public static string CapsuleName(int i) => $"c{i}";

    /// <summary>
    /// <paramref name="capsules"/> running capsules spread round-robin over <paramref name="hosts"/> hosts
    /// (h0 = 10.0.0.1, h1 = 10.0.0.2, ...): capsule c<i>i</i> is on host h<i>(i mod hosts)</i>, so c0 is on h0 and
    /// c1 on h1.
    /// </summary>
    public static DirectoryState Build(int capsules, int hosts)
    {
        if (hosts < 2 || capsules < 2) throw new ArgumentException("need at least two hosts and two capsules");
        var s = new DirectoryState(Pool);
        for (var h = 0; h < hosts; h++)
            s = Ok(s.PutHost(new HostRecord(HostName(h), new Locator(0x0A000001u + (uint)h),
                $"10.0.{h >> 8}.{(h & 0xFF) + 1}:7471")));
        // AllocateCapsule is linear in the capsule count, so this loop is quadratic; for 10,000
        // capsules it is still only a second or two of setup, paid once per benchmark process.
        for (var i = 0; i < capsules; i++)
        {
            var host = HostName(i % hosts);
            s = Ok(s.AllocateCapsule(CapsuleName(i), host));
            s = Ok(s.UpdateCapsule(CapsuleName(i), host, CapsuleState.Running, s.Capsules[CapsuleName(i)].Revision));
        }
        return s;
    }

    static DirectoryState Ok(DirectoryState.Result r) =>
        r.Ok ? r.State : throw new InvalidOperationException($"fixture setup failed: {r.Error}");

    /// <summary>
    /// A well-formed IPv4 packet of <paramref name="length"/> bytes: version/IHL 0x45, total length =
    /// packet length, DF, TTL 64, protocol 6 (TCP), correct header checksum, given addresses.
    /// </summary>
    public static byte[] Ipv4Packet(Locator src, Locator dst, int length)
    {
        var p = new byte[length];
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), (ushort)length);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(4), 0x1234); // identification
        p[6] = 0x40;                                                // DF
        p[8] = 64;                                                  // TTL
        p[9] = 6;                                                   // TCP
        src.Write(p.AsSpan(12, 4));
        dst.Write(p.AsSpan(16, 4));
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), Checksum(p.AsSpan(0, 20)));
        for (var i = 20; i < p.Length; i++) p[i] = (byte)(i * 7);
        return p;
    }

    /// <summary>The overlay datagram payload: the 8-byte header followed by <paramref name="inner"/>.</summary>
    public static byte[] Wrap(byte[] inner, uint epoch)
    {
        var d = new byte[Wire.HeaderSize + inner.Length];
        Wire.WriteHeader(d, Wire.Kind.Ipv4, epoch);
        inner.CopyTo(d, Wire.HeaderSize);
        return d;
    }

    static ushort Checksum(ReadOnlySpan<byte> header)
    {
        uint sum = 0;
        for (var i = 0; i < header.Length; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(header[i..]);
        while (sum > 0xFFFF) sum = (sum & 0xFFFF) + (sum >> 16);
        return (ushort)~sum;
    }
}
