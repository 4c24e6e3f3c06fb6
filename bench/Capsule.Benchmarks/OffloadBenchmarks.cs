using System.Buffers.Binary;
using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using Capsule.Core;
using Capsule.Core.Offload;

namespace Capsule.Benchmarks;

/// <summary>
/// The offload path of issue 11, per 64 KiB of TCP: cutting a TSO super-packet into 1448-byte segments (with
/// checksums), coalescing 44 such segments back into one, sealing each segment with AES-GCM in place, and what
/// the gateway's pause costs each segment that arrives (its TCP header parsed, its flow looked up). The baseline
/// is the least any of them costs: copying the 64 KiB once. Each must allocate 0 B.
/// </summary>
[MemoryDiagnoser]
public class OffloadBenchmarks
{
    const int Mss = 1448;
    const int Segments = 44;
    const int Stride = 2048;
    const int Offset = Wire.HeaderSize;

    readonly byte[] _super = new byte[52 + Mss * Segments];
    readonly byte[] _slots = new byte[Segments * Stride];
    readonly int[] _lengths = new int[Segments];
    readonly byte[][] _segments = new byte[Segments][];
    readonly Coalescer _coalescer = new();
    readonly AesGcm _aes = new(new byte[32], Wire.TagSize);
    readonly VirtioNetHeader _tso =
        new(VirtioNetHeader.NeedsCsum, VirtioNetHeader.GsoTcpV4, 52, Mss, 20, 16);
    readonly CoalescedPacket _count;
    int _emitted;
    // As the agent's flow table (Engine.Pause.cs): keyed by the capsule's side, 1,000 flows tracked.
    readonly BoundedTable<(uint, ushort, uint, ushort), object> _flows = new(65536, _ => 0, _ => false);

    // A delegate made once: one made from the method group at each call would allocate.
    public OffloadBenchmarks() => _count = (_, _) => _emitted++;

    [GlobalSetup]
    public void Setup()
    {
        var p = _super.AsSpan();
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p[2..], (ushort)p.Length);
        p[6] = 0x40;
        p[8] = 64;
        p[9] = Tcp.Protocol;
        Locator.Parse("100.64.0.2").Write(p[12..]);
        Locator.Parse("100.64.0.3").Write(p[16..]);
        p[32] = 8 << 4; // 32-byte TCP header: 12 bytes of options (NOP NOP timestamps)
        p[33] = Tcp.ACK;
        p[40] = 1;
        p[41] = 1;
        p[42] = 8;
        p[43] = 10;
        new Random(1).NextBytes(p[52..]);
        if (Cut() != Segments) throw new InvalidOperationException("the super-packet was not cut");
        for (var k = 0; k < Segments; k++) _segments[k] = _slots.AsSpan(k * Stride + Offset, _lengths[k]).ToArray();
        if (Coalesce() != 1) throw new InvalidOperationException("the segments did not coalesce into one");
        for (var k = 0; k < 1000; k++)
            _flows.GetOrAdd((Locator.Parse("100.64.0.2").Value, (ushort)k, Locator.Parse("100.64.0.3").Value, 0),
                _ => new object());
        if (Track() != Segments) throw new InvalidOperationException("the segments' flow was not found");
    }

    [GlobalCleanup]
    public void Cleanup() => _aes.Dispose();

    [Benchmark(Baseline = true, Description = "copy 64 KiB once (baseline)")]
    public int Copy()
    {
        _super.CopyTo(_slots, 0);
        return _slots[100];
    }

    [Benchmark(Description = "Segmenter.Cut: 64 KiB TSO into 44 segments")]
    public int Cut() => Segmenter.Cut(_tso, _super, _slots, Stride, Offset, _lengths, out _);

    [Benchmark(Description = "Coalescer: 44 segments into one")]
    public int Coalesce()
    {
        _emitted = 0;
        foreach (var s in _segments) _coalescer.Add(s, _count);
        _coalescer.Flush(_count);
        return _emitted;
    }

    [Benchmark(Description = "pause tracking: 44 segments parsed, their flow looked up")]
    public int Track()
    {
        var found = 0;
        foreach (var p in _segments)
        {
            if (!Tcp.TryParse(p, out var s)) continue;
            if (_flows.TryGetValue((s.Src.Value, s.SrcPort, s.Dst.Value, s.DstPort), out _)) found++;
        }
        return found;
    }

    [Benchmark(Description = "Aead.Seal: 44 segments, AES-GCM in place")]
    public int Seal()
    {
        var n = 0;
        for (var k = 0; k < Segments; k++)
        {
            var d = _slots.AsSpan(k * Stride, Stride);
            Wire.WriteHeader(d, Wire.Kind.Ipv4, 1, Wire.Mode.Encrypted, 7, (ulong)k);
            n += Aead.Seal(_aes, d, _lengths[k]);
        }
        return n;
    }
}
