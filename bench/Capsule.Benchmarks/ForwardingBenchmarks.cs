using System.Buffers.Binary;
using BenchmarkDotNet.Attributes;
using Capsule.Core;

namespace Capsule.Benchmarks;

/// <summary>
/// The per-packet path: what the agent does for every packet, so each of these must allocate 0 B.
/// One 1400-byte IPv4 packet from capsule c0 (on host h0) to the last capsule (on another host),
/// routed through translation tables of <see cref="Capsules"/> capsules. The baseline is the least a
/// lookup can cost: read the destination and find it in a plain <see cref="Dictionary{TKey, TValue}"/>.
/// </summary>
[MemoryDiagnoser]
public class ForwardingBenchmarks
{
    const int PacketLength = 1400;

    [Params(10, 10_000)]
    public int Capsules { get; set; }

    TranslationTable _sender = TranslationTable.Empty;   // the table of h0, which sends
    TranslationTable _receiver = TranslationTable.Empty; // the table of the destination's host
    Locator _senderHost;
    Dictionary<uint, uint> _plain = [];
    byte[] _packet = [];
    byte[] _datagram = [];
    readonly byte[] _header = new byte[Wire.HeaderSize];

    [GlobalSetup]
    public void Setup()
    {
        var hosts = Math.Clamp(Capsules / 100, 2, 100); // 10 capsules on 2 hosts, 10,000 on 100
        var state = Fixture.Build(Capsules, hosts);
        var src = state.Capsules[Fixture.CapsuleName(0)];
        var dst = state.Capsules[Fixture.CapsuleName(Capsules - 1)];
        if (src.Host == dst.Host)
            throw new InvalidOperationException("source and destination must be on different hosts");

        _sender = TranslationTable.From(state, src.Host);
        _receiver = TranslationTable.From(state, dst.Host);
        _senderHost = state.Hosts[src.Host].Underlay;

        // The same remote capsule → host map the sender's table holds, in a plain dictionary.
        _plain = state.Capsules.Values
            .Where(c => c.State == CapsuleState.Running && c.Host != src.Host)
            .ToDictionary(c => c.Locator.Value, c => state.Hosts[c.Host].Underlay.Value);

        _packet = Fixture.Ipv4Packet(src.Locator, dst.Locator, PacketLength);
        _datagram = Fixture.Wrap(_packet, _sender.Epoch);

        // Measure the paths that forward, never a drop path by mistake.
        if (Outbound() != state.Hosts[dst.Host].Underlay.Value)
            throw new InvalidOperationException("outbound did not route");
        if (Inbound() != _datagram.Length) throw new InvalidOperationException("inbound did not accept");
        if (PlainDictionary() != state.Hosts[dst.Host].Underlay.Value)
            throw new InvalidOperationException("baseline did not find the route");
        if (WireHeader() != _sender.Epoch) throw new InvalidOperationException("header did not round-trip");
    }

    [Benchmark(Baseline = true, Description = "Dictionary<uint,uint> lookup of dst (baseline)")]
    public uint PlainDictionary()
    {
        var dst = BinaryPrimitives.ReadUInt32BigEndian(_packet.AsSpan(16, 4));
        return _plain.TryGetValue(dst, out var host) ? host : 0;
    }

    [Benchmark(Description = "Forwarding.Outbound")]
    public uint Outbound()
    {
        var r = Forwarding.Outbound(_sender, _packet, out var toHost);
        return r == DropReason.None ? toHost.Value : 0;
    }

    [Benchmark(Description = "Forwarding.Inbound")]
    public int Inbound()
    {
        var r = Forwarding.Inbound(_receiver, _senderHost, _datagram, out var inner);
        return r == DropReason.None ? inner.End.Value : -1;
    }

    /// <summary>Does not depend on <see cref="Capsules"/>; it sits here so the table shows its ratio too.</summary>
    [Benchmark(Description = "Wire.WriteHeader + TryReadHeader")]
    public uint WireHeader()
    {
        Wire.WriteHeader(_header, Wire.Kind.Ipv4, _sender.Epoch);
        return Wire.TryReadHeader(_header, out _, out var epoch) == DropReason.None ? epoch : 0;
    }
}
