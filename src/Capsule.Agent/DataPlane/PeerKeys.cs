using System.Collections.Concurrent;
using System.Security.Cryptography;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// The data plane's keys, one set per peer host: the key this host seals with towards it, and the
/// keys it opens that host's datagrams with (the current one, and the previous one for a short
/// grace while a rotation reaches every packet in flight). The control side (<see cref="KeyExchange"/>)
/// installs keys; the egress lanes seal, the ingress lanes open (<see cref="Engine"/>: one thread of each per
/// lane). A key object is swapped whole (a volatile reference), never changed under a reader. AesGcm is not safe
/// to share between threads, so a key has one per lane. Each sending lane counts on its own, in the counter's top
/// byte (<see cref="LaneOf"/>): the counters stay unique (a GCM nonce is never reused), no two lanes write one
/// counter, and the receiver keeps a replay window per sending lane, which sees that lane's datagrams in order
/// (one lane sends from one port, to one receiving lane), so the migration cut stays exact. Key bytes are never
/// logged.
/// </summary>
internal sealed class PeerKeys(Wire.Mode mode, int lanes = 1)
{
    /// <summary>Past this many packets under one key the sender asks for a new one (rotation by volume).</summary>
    public const ulong RekeyAfterPackets = 1UL << 32;
    /// <summary>A key is never used past this: the sender drops (no_send_key) until a new one is acked.</summary>
    public const ulong RejectAfterPackets = 1UL << 34;
    /// <summary>How long the previous receive key still opens datagrams after a new one is installed.</summary>
    public static readonly TimeSpan PreviousKeyGrace = TimeSpan.FromSeconds(10);
    /// <summary>At most one ask per host and direction in this many ms: a flood of bad datagrams stays cheap.</summary>
    const long AskEveryMs = 1000;

    /// <summary>Most lanes: the counter's top byte says which lane sealed it.</summary>
    public const int MaxLanes = 256;
    const int LaneShift = 56;

    /// <summary>The sending lane a datagram's counter belongs to.</summary>
    public static int LaneOf(ulong counter) => (int)(counter >> LaneShift);

    sealed class SendKey(uint id, AesGcm[] aes)
    {
        // Each lane's count sits on a cache line of its own: lanes never write one line.
        const int Stride = 8;
        readonly ulong[] _next = new ulong[aes.Length * Stride];
        public readonly uint Id = id;
        public readonly AesGcm[] Aes = aes; // one per lane
        public ref ulong Next(int lane) => ref _next[lane * Stride];
    }

    sealed class ReceiveKey(uint id, AesGcm[] aes)
    {
        public readonly uint Id = id;
        public readonly AesGcm[] Aes = aes; // one per receiving lane
        readonly ReplayWindow?[] _windows = new ReplayWindow?[MaxLanes]; // per sending lane, made at its first

        public ReplayWindow? Window(int lane) => Volatile.Read(ref _windows[lane]);

        public ReplayWindow WindowFor(int lane) =>
            Window(lane) ?? Interlocked.CompareExchange(ref _windows[lane], new ReplayWindow(), null)
            ?? _windows[lane]!;
    }

    sealed record ReceiveKeys(ReceiveKey Current, ReceiveKey? Previous, long PreviousUntilMs);

    sealed class Peer
    {
        public volatile SendKey? Send;
        public volatile ReceiveKeys? Receive;
        public long NextSendAskMs, NextReceiveAskMs; // egress, ingress lanes (two lanes at once ask twice at most)
    }

    readonly ConcurrentDictionary<uint, Peer> _peers = new();

    public Wire.Mode Mode => mode;

    /// <summary>How many lanes seal and open at once, each with its own lane number.</summary>
    public int Lanes => lanes;

    /// <summary>
    /// Called on a data-plane thread when <paramref name="host"/> needs a key pushed to it (its second argument:
    /// ask it for its own key back too). Rate-limited per host; it must return at once.
    /// </summary>
    public Action<Locator, bool>? OnNeed { get; set; }

    /// <summary>Send keys switched to (each acknowledged by its peer) and receive keys installed.</summary>
    public long SendKeysInstalled, ReceiveKeysInstalled;

    Peer PeerOf(Locator host) =>
        _peers.TryGetValue(host.Value, out var p) ? p : _peers.GetOrAdd(host.Value, _ => new());

    // The peer each data-plane thread used last: a batch goes mostly to (or comes mostly from) one host, so one
    // lookup serves the run. A peer object lives until Forget, which bumps the generation and so empties them all.
    int _generation;
    readonly (uint Host, int Generation, Peer? Peer)[] _lastSend = new (uint, int, Peer?)[lanes];
    readonly (uint Host, int Generation, Peer? Peer)[] _lastOpen = new (uint, int, Peer?)[lanes];

    Peer Cached(ref (uint Host, int Generation, Peer? Peer) last, Locator host)
    {
        var generation = Volatile.Read(ref _generation);
        if (last.Peer is { } p && last.Host == host.Value && last.Generation == generation) return p;
        p = PeerOf(host);
        last = (host.Value, generation, p);
        return p;
    }

    /// <summary>
    /// Egress lane <paramref name="lane"/>: writes the header for <paramref name="host"/> in front of the payload
    /// at <paramref name="datagram"/>'s start and seals it; <paramref name="length"/> is the datagram's length.
    /// </summary>
    public DropReason Seal(Locator host, Span<byte> datagram, int payloadLength, uint epoch, out int length,
        int lane = 0)
    {
        length = 0;
        var peer = Cached(ref _lastSend[lane], host);
        var key = peer.Send;
        if (key is null || key.Next(lane) >= RejectAfterPackets)
        {
            Ask(host, ref peer.NextSendAskMs, back: false);
            return DropReason.NoSendKey;
        }
        ref var next = ref key.Next(lane);
        var n = next;
        Volatile.Write(ref next, n + 1); // this lane's thread alone writes it; a hold's cut reads it
        if (n >= RekeyAfterPackets) Ask(host, ref peer.NextSendAskMs, back: false);
        Wire.WriteHeader(datagram, Wire.Kind.Ipv4, epoch, mode, key.Id, ((ulong)lane << LaneShift) | n);
        length = Aead.Seal(key.Aes[lane], datagram, payloadLength);
        return DropReason.None;
    }

    /// <summary>
    /// Ingress lane <paramref name="lane"/>: opens a datagram from a known host whose header was read. The replay
    /// window moves only for a datagram whose tag verified.
    /// </summary>
    public DropReason Open(Locator from, in Wire.Header h, Span<byte> datagram, int lane = 0)
    {
        var peer = Cached(ref _lastOpen[lane], from);
        var keys = peer.Receive;
        ReceiveKey? key = null;
        if (keys is not null)
        {
            if (keys.Current.Id == h.KeyId) key = keys.Current;
            else if (keys.Previous?.Id == h.KeyId && Environment.TickCount64 < keys.PreviousUntilMs)
                key = keys.Previous;
        }
        if (key is null)
        {
            // It restarted, or we did: ask it to push us its key (and to take a fresh one of ours).
            Ask(from, ref peer.NextReceiveAskMs, back: true);
            return DropReason.UnknownKey;
        }
        var sender = LaneOf(h.Counter);
        var count = h.Counter & ((1UL << LaneShift) - 1);
        if (key.Window(sender) is { } seen && !seen.CanAccept(count)) return DropReason.Replay;
        if (!Aead.Open(key.Aes[lane], datagram)) return DropReason.BadTag;
        // A sending lane's window is made for its first authentic datagram: a forger cannot make any.
        return key.WindowFor(sender).Accept(count) ? DropReason.None : DropReason.Replay;
    }

    void Ask(Locator host, ref long nextMs, bool back)
    {
        var now = Environment.TickCount64;
        if (now < Volatile.Read(ref nextMs)) return;
        Volatile.Write(ref nextMs, now + AskEveryMs);
        OnNeed?.Invoke(host, back);
    }

    /// <summary>
    /// The key this host seals with towards <paramref name="host"/> and how many datagrams it has sealed under it;
    /// (0, 0) with no key. A hold's cut (seed Fig. 5B): counted per key, so both ends count from the same start,
    /// whichever of them restarted since. Exact once every egress lane is between batches (Engine.Holds.cs).
    /// </summary>
    public HoldCut SealedTowards(Locator host)
    {
        if (!_peers.TryGetValue(host.Value, out var p) || p.Send is not { } key) return default;
        var sent = new ulong[lanes];
        for (var i = 0; i < lanes; i++) sent[i] = Volatile.Read(ref key.Next(i));
        return new HoldCut(key.Id, sent);
    }

    /// <summary>
    /// Any thread: how many of the datagrams <paramref name="host"/> sealed before <paramref name="cut"/> have not
    /// arrived, lane by lane, as far as each lane's sequence goes (<see cref="ReplayWindow.Reached"/>: a lane's
    /// datagrams arrive in order, so one below the highest that is missing was lost, not late); 0 when this host
    /// does not (or no longer) open the cut's key, since nothing sealed under it can arrive then.
    /// </summary>
    public ulong NotYetOpened(Locator host, HoldCut cut)
    {
        if (!_peers.TryGetValue(host.Value, out var p) || p.Receive is not { } keys) return 0;
        var key = keys.Current.Id == cut.KeyId ? keys.Current : keys.Previous?.Id == cut.KeyId ? keys.Previous : null;
        if (key is null) return 0;
        var missing = 0UL;
        for (var lane = 0; lane < cut.Lanes; lane++)
        {
            var reached = key.Window(lane)?.Reached ?? 0;
            var sent = cut.SentBy(lane);
            if (reached < sent) missing += sent - reached;
        }
        return missing;
    }

    public bool HasSendKey(Locator host) => _peers.TryGetValue(host.Value, out var p) && p.Send is not null;

    /// <summary>
    /// Egress: whether a datagram to <paramref name="host"/> can be sealed now; if not, its key is asked for (as a
    /// failed seal would ask).
    /// </summary>
    public bool CanSealTowards(Locator host)
    {
        var peer = PeerOf(host);
        if (peer.Send is { } key && key.Next(0) < RejectAfterPackets) return true;
        Ask(host, ref peer.NextSendAskMs, back: false);
        return false;
    }

    /// <summary>
    /// Control: <paramref name="host"/> has none of our keys (it restarted): what we seal with towards it would be
    /// dropped there as unknown, so it is dropped here, until a new key is acknowledged.
    /// </summary>
    public void DropSend(Locator host)
    {
        if (_peers.TryGetValue(host.Value, out var p)) p.Send = null;
    }
    public bool HasReceiveKey(Locator host) => _peers.TryGetValue(host.Value, out var p) && p.Receive is not null;

    /// <summary>Control: the peer acknowledged this key; the next packet to it is sealed with it.</summary>
    public void InstallSend(Locator host, uint id, ReadOnlySpan<byte> key)
    {
        // The old key's AesGcm may be in use on an egress lane right now: left to the collector, not disposed.
        PeerOf(host).Send = new SendKey(id, PerLane(key));
        Interlocked.Increment(ref SendKeysInstalled);
    }

    /// <summary>Control: <paramref name="host"/> will seal with this key; its current one becomes previous.</summary>
    public void InstallReceive(Locator host, uint id, ReadOnlySpan<byte> key)
    {
        var peer = PeerOf(host);
        lock (peer)
        {
            var old = peer.Receive;
            if (old?.Current.Id == id) return; // the same push again (its reply was lost): keep the window
            var until = Environment.TickCount64 + (long)PreviousKeyGrace.TotalMilliseconds;
            peer.Receive = new ReceiveKeys(new ReceiveKey(id, PerLane(key)), old?.Current, until);
        }
        Interlocked.Increment(ref ReceiveKeysInstalled);
    }

    /// <summary>One AesGcm per lane: an instance is not safe to use from two threads at once.</summary>
    AesGcm[] PerLane(ReadOnlySpan<byte> key)
    {
        var aes = new AesGcm[lanes];
        for (var i = 0; i < lanes; i++) aes[i] = new AesGcm(key, Wire.TagSize);
        return aes;
    }

    /// <summary>Control: a host that left the directory; its keys go with it.</summary>
    public void Forget(Locator host)
    {
        _peers.TryRemove(host.Value, out _);
        Interlocked.Increment(ref _generation);
    }

    public IEnumerable<Locator> Hosts => _peers.Keys.Select(k => new Locator(k));
}
