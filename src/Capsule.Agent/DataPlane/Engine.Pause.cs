using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>One TCP flow between an ordinary host and a capsule, as the gateway sees it.</summary>
internal sealed class TcpFlow
{
    // Capsule side, from its segments (the ingress lanes).
    public uint CapSeqNext, CapAck, CapTsVal;
    public ushort CapWindow;
    public bool Timestamps, CapSeen;
    public long LastSeen; // Environment.TickCount64 of the capsule's last segment
    // The peer's latest timestamp, to echo: what the capsule echoed last (ingress), then, while a hold keeps the
    // peer's segments, their own (egress).
    public uint PeerTsVal;
    // The pause (the owner's egress thread sets and clears; the ingress lanes read).
    public volatile bool Paused;
    public uint AckedForCapsule; // peer data held in order and acknowledged in the capsule's name
    public bool AckedValid;
}

internal readonly record struct FlowKey(uint Capsule, ushort CapsulePort, uint Peer, ushort PeerPort);

/// <summary>
/// The gateway's pause (seed Fig. 9: "the transmit window … is set to zero and/or a keep alive
/// message is sent back"). While a capsule with ordinary TCP peers moves, the gateway speaks for it:
/// it acknowledges, with a zero window, the peer's segments it holds in order (so the peer has
/// nothing unacknowledged, and no retransmission timer runs), rewrites the window of the capsule's
/// own last segments to zero, answers the peer's window probes (the keepalive), and reopens the
/// window once the held segments are on their way to the capsule's new host. Segments are only
/// acknowledged once they are safely in the hold buffer; a full buffer acknowledges nothing more.
/// </summary>
internal sealed unsafe partial class Engine
{
    /// <summary>Flows tracked when the agent's settings name no cap (MaxTcpFlows): ~10 MB of state at most.</summary>
    public const int DefaultMaxFlows = 65536;

    // Keyed by the remote capsule's side: flows are learned from what arrives over the overlay, so
    // anyone who reaches a capsule (a SYN flood through a gateway) makes it grow: it is bounded, the
    // flows idle longest evicted first, a paused one never (its peer waits on the gateway's word).
    readonly BoundedTable<FlowKey, TcpFlow> _flows = NewFlowTable(DefaultMaxFlows);
    volatile bool _anyFlows;
    public long PausesSent, ReopensSent, AckedOnBehalf;

    /// <summary>Most TCP flows the pause tracks; set once, at construction.</summary>
    public int MaxFlows
    {
        get => _flows.Capacity;
        init => _flows = NewFlowTable(value);
    }

    /// <summary>Flows tracked now, flows evicted to make room, and new flows left untracked (all paused).</summary>
    public (int Tracked, long Evicted, long Refused) FlowStats => (_flows.Count, _flows.Evicted, _flows.Refused);

    static BoundedTable<FlowKey, TcpFlow> NewFlowTable(int capacity) =>
        new(capacity, f => Volatile.Read(ref f.LastSeen), f => f.Paused);

    static bool After(uint a, uint b) => (int)(a - b) > 0;

    /// <summary>
    /// Ingress (capsule → ordinary host): learn the capsule's sequence, ack and window; zero the window while paused.
    /// </summary>
    void TrackCapsuleSide(Span<byte> packet)
    {
        if (!Tcp.TryParse(packet, out var s)) return;
        var key = new FlowKey(s.Src.Value, s.SrcPort, s.Dst.Value, s.DstPort);
        if (!_flows.TryGetValue(key, out var f))
        {
            if (s.Rst) return;
            // Null when every tracked flow is paused: this one passes untracked (and counted), so a
            // move now would not pause it; its peer retransmits instead, as with no gateway's help.
            var added = _flows.GetOrAdd(key, _ => new TcpFlow { LastSeen = Environment.TickCount64 });
            if (added is null) return;
            f = added;
            _anyFlows = true;
        }
        var next = s.Seq + s.SeqLength;
        if (!f.CapSeen || After(next, f.CapSeqNext)) f.CapSeqNext = next;
        if (s.HasAck && (!f.CapSeen || After(s.Ack, f.CapAck))) f.CapAck = s.Ack;
        f.Timestamps = s.HasTimestamps;
        if (s.HasTimestamps)
        {
            f.CapTsVal = s.TsVal;
            if (s.HasAck && (f.PeerTsVal == 0 || After(s.TsEcr, f.PeerTsVal))) f.PeerTsVal = s.TsEcr;
        }
        if (f.Paused) Tcp.SetWindow(packet, 0);
        else f.CapWindow = s.Window;
        f.CapSeen = true;
        f.LastSeen = Environment.TickCount64;
        if (s.Rst) _flows.TryRemove(key);
    }


    void PauseFlows(Locator capsule)
    {
        foreach (var (key, f) in _flows)
        {
            if (key.Capsule != capsule.Value || !f.CapSeen) continue;
            f.AckedForCapsule = f.CapAck;
            f.AckedValid = true;
            f.Paused = true;
            SendAck(key, f, window: 0);
            PausesSent++;
        }
    }

    /// <summary>
    /// A segment for a paused flow was just held (or refused by a full hold): acknowledge what is held in order,
    /// window zero. Only a held packet is parsed for this on the way out: the rest of the egress path never looks
    /// into TCP (the timestamp to echo comes from the capsule's own segments until the hold).
    /// </summary>
    void SpeakForPausedCapsule(ReadOnlySpan<byte> packet, bool stored)
    {
        if (!Tcp.TryParse(packet, out var s)) return;
        var key = new FlowKey(s.Dst.Value, s.DstPort, s.Src.Value, s.SrcPort);
        if (!_flows.TryGetValue(key, out var f)) return;
        if (s.HasTimestamps) f.PeerTsVal = s.TsVal;
        if (!f.Paused) return;
        // The capsule may have acknowledged more than we knew at the pause (it ran until the freeze).
        if (After(f.CapAck, f.AckedForCapsule)) f.AckedForCapsule = f.CapAck;
        if (stored && s.PayloadLength > 0 && s.Seq == f.AckedForCapsule)
        {
            f.AckedForCapsule += s.SeqLength;
            Interlocked.Increment(ref AckedOnBehalf); // any lane's egress thread, under its hold's lock
        }
        // Answer data and window probes (a probe repeats the byte before the next expected, or
        // carries none at that place): that is the keepalive that keeps the peer waiting. Never
        // answer a bare ACK — the peer would answer ours in turn, and the two would loop (seen).
        var probe = s.PayloadLength == 0 && s.Seq == f.AckedForCapsule - 1;
        if (s.PayloadLength == 0 && !probe) return;
        SendAck(key, f, window: 0);
    }

    void ResumeFlows(Locator capsule)
    {
        foreach (var (key, f) in _flows)
        {
            if (key.Capsule != capsule.Value || !f.Paused) continue;
            f.Paused = false;
            SendAck(key, f, f.CapWindow == 0 ? (ushort)1 : f.CapWindow);
            ReopensSent++;
        }
    }

    /// <summary>
    /// Forgets flows idle for longer than <paramref name="idle"/> (closed connections); never a paused one. Control
    /// path.
    /// </summary>
    public int SweepFlows(TimeSpan idle)
    {
        var before = Environment.TickCount64 - (long)idle.TotalMilliseconds;
        return _flows.RemoveWhere((_, f) => !f.Paused && Volatile.Read(ref f.LastSeen) < before);
    }

    void ForgetFlows(Locator capsule)
    {
        _flows.RemoveWhere((key, _) => key.Capsule == capsule.Value);
    }

    void SendAck(FlowKey key, TcpFlow f, ushort window)
    {
        Span<byte> ack = stackalloc byte[Tcp.MaxAck];
        var ackNo = f.AckedValid && After(f.AckedForCapsule, f.CapAck) ? f.AckedForCapsule : f.CapAck;
        var n = Tcp.WriteAck(ack, new Locator(key.Capsule), key.CapsulePort, new Locator(key.Peer), key.PeerPort,
            f.CapSeqNext, ackNo, window, f.Timestamps, f.CapTsVal, f.PeerTsVal);
        // Into the TUN: the kernel routes it to the ordinary host as if the capsule had sent it.
        fixed (byte* p = ack) Owner.Tun.Write(p, n);
    }
}
