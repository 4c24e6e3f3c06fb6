using System.Collections.Concurrent;
using System.Security.Cryptography;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// The data plane's keys, one set per peer host: the key this host seals with towards it, and the
/// keys it opens that host's datagrams with (the current one, and the previous one for a short
/// grace while a rotation reaches every packet in flight). The control side (<see cref="KeyExchange"/>)
/// installs keys; the egress thread alone seals, the ingress thread alone opens. A key object is
/// swapped whole (a volatile reference), never changed under a reader; its AesGcm and replay window
/// belong to the one thread that uses them. Key bytes are never logged.
/// </summary>
internal sealed class PeerKeys(Wire.Mode mode)
{
    /// <summary>Past this many packets under one key the sender asks for a new one (rotation by volume).</summary>
    public const ulong RekeyAfterPackets = 1UL << 32;
    /// <summary>A key is never used past this: the sender drops (no_send_key) until a new one is acked.</summary>
    public const ulong RejectAfterPackets = 1UL << 34;
    /// <summary>How long the previous receive key still opens datagrams after a new one is installed.</summary>
    public static readonly TimeSpan PreviousKeyGrace = TimeSpan.FromSeconds(10);
    /// <summary>At most one ask per host and direction in this many ms: a flood of bad datagrams stays cheap.</summary>
    const long AskEveryMs = 1000;

    sealed class SendKey(uint id, AesGcm aes)
    {
        public readonly uint Id = id;
        public readonly AesGcm Aes = aes;
        public ulong Next;
    }

    sealed class ReceiveKey(uint id, AesGcm aes)
    {
        public readonly uint Id = id;
        public readonly AesGcm Aes = aes;
        public readonly ReplayWindow Window = new();
    }

    sealed record ReceiveKeys(ReceiveKey Current, ReceiveKey? Previous, long PreviousUntilMs);

    sealed class Peer
    {
        public volatile SendKey? Send;
        public volatile ReceiveKeys? Receive;
        public long NextSendAskMs, NextReceiveAskMs; // egress, ingress thread respectively
    }

    readonly ConcurrentDictionary<uint, Peer> _peers = new();

    public Wire.Mode Mode => mode;

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
    // lookup serves the run. A peer object lives until Forget, which bumps the generation and so empties both.
    int _generation;
    (uint Host, int Generation, Peer? Peer) _lastSend, _lastOpen;

    Peer Cached(ref (uint Host, int Generation, Peer? Peer) last, Locator host)
    {
        var generation = Volatile.Read(ref _generation);
        if (last.Peer is { } p && last.Host == host.Value && last.Generation == generation) return p;
        p = PeerOf(host);
        last = (host.Value, generation, p);
        return p;
    }

    /// <summary>
    /// Egress thread: writes the header for <paramref name="host"/> in front of the payload at
    /// <paramref name="datagram"/>'s start and seals it; <paramref name="length"/> is the datagram's length.
    /// </summary>
    public DropReason Seal(Locator host, Span<byte> datagram, int payloadLength, uint epoch, out int length)
    {
        length = 0;
        var peer = Cached(ref _lastSend, host);
        var key = peer.Send;
        if (key is null || key.Next >= RejectAfterPackets)
        {
            Ask(host, ref peer.NextSendAskMs, back: false);
            return DropReason.NoSendKey;
        }
        var counter = key.Next++;
        if (counter >= RekeyAfterPackets) Ask(host, ref peer.NextSendAskMs, back: false);
        Wire.WriteHeader(datagram, Wire.Kind.Ipv4, epoch, mode, key.Id, counter);
        length = Aead.Seal(key.Aes, datagram, payloadLength);
        return DropReason.None;
    }

    /// <summary>
    /// Ingress thread: opens a datagram from a known host whose header was read. The replay window
    /// moves only for a datagram whose tag verified.
    /// </summary>
    public DropReason Open(Locator from, in Wire.Header h, Span<byte> datagram)
    {
        var peer = Cached(ref _lastOpen, from);
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
        if (!key.Window.CanAccept(h.Counter)) return DropReason.Replay;
        if (!Aead.Open(key.Aes, datagram)) return DropReason.BadTag;
        return key.Window.Accept(h.Counter) ? DropReason.None : DropReason.Replay;
    }

    void Ask(Locator host, ref long nextMs, bool back)
    {
        var now = Environment.TickCount64;
        if (now < Volatile.Read(ref nextMs)) return;
        Volatile.Write(ref nextMs, now + AskEveryMs);
        OnNeed?.Invoke(host, back);
    }

    /// <summary>
    /// Egress thread: the key this host seals with towards <paramref name="host"/> and how many datagrams it has
    /// sealed under it; (0, 0) with no key. A hold's cut (seed Fig. 5B): counted per key, so both ends count from
    /// the same start, whichever of them restarted since.
    /// </summary>
    public HoldCut SealedTowards(Locator host) =>
        _peers.TryGetValue(host.Value, out var p) && p.Send is { } key ? new HoldCut(key.Id, key.Next) : default;

    /// <summary>
    /// Any thread: how many of the datagrams <paramref name="host"/> sealed under <paramref name="keyId"/> have
    /// arrived, as far as their sequence goes (see <see cref="ReplayWindow.Reached"/>); null when this host does
    /// not (or no longer) open that key, so nothing sealed under it can arrive.
    /// </summary>
    public ulong? OpenedFrom(Locator host, uint keyId)
    {
        if (!_peers.TryGetValue(host.Value, out var p) || p.Receive is not { } keys) return null;
        if (keys.Current.Id == keyId) return keys.Current.Window.Reached;
        return keys.Previous?.Id == keyId ? keys.Previous.Window.Reached : null;
    }

    public bool HasSendKey(Locator host) => _peers.TryGetValue(host.Value, out var p) && p.Send is not null;
    public bool HasReceiveKey(Locator host) => _peers.TryGetValue(host.Value, out var p) && p.Receive is not null;

    /// <summary>Control: the peer acknowledged this key; the next packet to it is sealed with it.</summary>
    public void InstallSend(Locator host, uint id, ReadOnlySpan<byte> key)
    {
        // The old key's AesGcm may be in use on the egress thread right now: left to the collector, not disposed.
        PeerOf(host).Send = new SendKey(id, new AesGcm(key, Wire.TagSize));
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
            peer.Receive = new ReceiveKeys(new ReceiveKey(id, new AesGcm(key, Wire.TagSize)), old?.Current, until);
        }
        Interlocked.Increment(ref ReceiveKeysInstalled);
    }

    /// <summary>Control: a host that left the directory; its keys go with it.</summary>
    public void Forget(Locator host)
    {
        _peers.TryRemove(host.Value, out _);
        Interlocked.Increment(ref _generation);
    }

    public IEnumerable<Locator> Hosts => _peers.Keys.Select(k => new Locator(k));
}
