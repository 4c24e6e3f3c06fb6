using System.Buffers.Binary;
using System.Diagnostics;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>One flow's packets in a hold, for a move's per-connection report (addresses as in the packets).</summary>
internal readonly record struct HeldFlowCount(bool Tcp, Locator Peer, ushort PeerPort, Locator Capsule,
    ushort CapsulePort, long Packets, bool Paused);

/// <summary>What a hold had when a release came: how long it had held, and each flow's packets in it.</summary>
internal sealed record HoldContents(TimeSpan HeldFor, IReadOnlyList<HeldFlowCount> Flows);

internal sealed unsafe partial class Engine
{
    /// <summary>
    /// The contents of the hold of <paramref name="locator"/> by flow (null when there is none), read on the owner's
    /// egress thread just before its release, off the packet path: the release report of a move. TCP flows this
    /// hold paused with a zero window are listed even when none of their packets is held.
    /// </summary>
    public Task<HoldContents?> HoldContentsAsync(Locator locator) =>
        OnEgress<HoldContents?>(done =>
        {
            if (!_holds.TryGetValue(locator.Value, out var hold))
            {
                done.SetResult(null);
                return;
            }
            var counts = new Dictionary<(bool, uint, ushort, uint, ushort), long>();
            lock (hold.Gate)
            {
                for (var i = 0; i < hold.Buffer.Count; i++)
                    // A slot keeps headroom for the overlay header before the packet.
                    if (FlowOf(new ReadOnlySpan<byte>(hold.Buffer.Slot(i) + Wire.HeaderSize, hold.Buffer.Length(i)))
                        is { } k)
                        counts[k] = counts.GetValueOrDefault(k) + 1;
            }
            foreach (var (key, f) in _flows)
                if (key.Capsule == locator.Value && f.Paused)
                    counts.TryAdd((true, key.Peer, key.PeerPort, key.Capsule, key.CapsulePort), 0);
            var flows = counts.Select(kv => new HeldFlowCount(kv.Key.Item1, new Locator(kv.Key.Item2), kv.Key.Item3,
                new Locator(kv.Key.Item4), kv.Key.Item5, kv.Value, kv.Key.Item1 && IsPaused(kv.Key))).ToList();
            var heldFor = Stopwatch.GetElapsedTime(hold.Started);
            done.SetResult(new HoldContents(heldFor, flows));
        });

    bool IsPaused((bool Tcp, uint Peer, ushort PeerPort, uint Capsule, ushort CapsulePort) k) =>
        _flows.TryGetValue(new FlowKey(k.Capsule, k.CapsulePort, k.Peer, k.PeerPort), out var f) && f.Paused;

    /// <summary>An IPv4 TCP or UDP packet's (tcp, source, source port, destination, destination port).</summary>
    static (bool, uint, ushort, uint, ushort)? FlowOf(ReadOnlySpan<byte> p)
    {
        if (p.Length < 20 || p[0] >> 4 != 4) return null;
        var header = (p[0] & 0xF) * 4;
        var protocol = p[9];
        if (protocol is not (6 or 17) || p.Length < header + 4) return null;
        var src = BinaryPrimitives.ReadUInt32BigEndian(p[12..]);
        var dst = BinaryPrimitives.ReadUInt32BigEndian(p[16..]);
        var sport = BinaryPrimitives.ReadUInt16BigEndian(p[header..]);
        var dport = BinaryPrimitives.ReadUInt16BigEndian(p[(header + 2)..]);
        return (protocol == 6, src, sport, dst, dport);
    }
}
