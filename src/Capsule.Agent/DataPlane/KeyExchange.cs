using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Threading.Channels;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// Keys per host pair over the control channel, no handshake protocol of its own: this agent makes a
/// random send key for each peer host, installs it at the peer (HostAgent.PeerKey) and seals with it only
/// once the peer acknowledged. Pushed when a host appears in the directory, every
/// <see cref="AgentOptions.KeyRotation"/>, when a key nears its packet limit, when the egress has no key
/// for a peer, and when a peer's datagrams carry a key id this host does not have (it asks the peer, with
/// its own fresh key, to send one back). Failed pushes are retried with a growing pause.
/// </summary>
internal sealed partial class KeyExchange(AgentOptions options, DataPlaneHost dataPlane, ILogger<KeyExchange> log)
    : BackgroundService
{
    static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(250);
    static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(5);
    const long FirstRetryMs = 250, LastRetryMs = 5000;

    /// <summary>Control-side state of one peer (the keys themselves are in <see cref="PeerKeys"/>).</summary>
    sealed class Peer
    {
        public int Busy;
        /// <summary>Asked again while a push ran: that push may fail or carry a key the peer no longer has.</summary>
        public int Again;
        public long InstalledMs, RetryMs, BackoffMs;
    }

    readonly Channel<(Locator Host, bool Back)> _asks =
        Channel.CreateUnbounded<(Locator, bool)>(new UnboundedChannelOptions { SingleReader = true });
    readonly ConcurrentDictionary<uint, Peer> _peers = new();

    PeerKeys Keys => dataPlane.Keys;

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        Keys.OnNeed = (host, back) => _asks.Writer.TryWrite((host, back));
        dataPlane.OnHostsChanged = _ => _asks.Writer.TryWrite((Locator.None, false));
        try
        {
            await dataPlane.Ready.WaitAsync(stop);
            _ = TickAsync(stop);
            await foreach (var (host, back) in _asks.Reader.ReadAllAsync(stop))
            {
                if (host.IsNone) Review(stop);
                else Push(host, back, stop);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
    }

    async Task TickAsync(CancellationToken stop)
    {
        using var timer = new PeriodicTimer(Tick);
        try
        {
            while (await timer.WaitForNextTickAsync(stop)) _asks.Writer.TryWrite((Locator.None, false));
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>Every peer host: a key where it has none (retries paced), a fresh one where it is due.</summary>
    void Review(CancellationToken stop)
    {
        if (dataPlane.State is not { } state) return;
        var now = Environment.TickCount64;
        var hosts = new HashSet<uint>();
        foreach (var h in state.Hosts.Values)
        {
            if (h.Name == options.Host || h.Underlay == options.Underlay) continue;
            hosts.Add(h.Underlay.Value);
            var peer = PeerOf(h.Underlay);
            if (now < Volatile.Read(ref peer.RetryMs)) continue;
            var due = !Keys.HasSendKey(h.Underlay)
                || now - Volatile.Read(ref peer.InstalledMs) >= (long)options.KeyRotation.TotalMilliseconds;
            if (due) Start(h, peer, back: false, stop);
        }
        foreach (var gone in Keys.Hosts.Where(a => !hosts.Contains(a.Value)).ToList())
        {
            Keys.Forget(gone);
            _peers.TryRemove(gone.Value, out _);
        }
    }

    Peer PeerOf(Locator host) => _peers.GetOrAdd(host.Value, _ => new Peer());

    void Push(Locator host, bool back, CancellationToken stop)
    {
        var record = dataPlane.State?.Hosts.Values.FirstOrDefault(h => h.Underlay == host);
        if (record is null || record.Name == options.Host) return;
        Start(record, PeerOf(host), back, stop);
    }

    /// <summary>
    /// One push per peer at a time: a second ask while one runs is remembered and made once it ends (a peer that
    /// restarted asks while our push to its old self is still failing; waiting for the retry pause would stall
    /// every connection to it for seconds).
    /// </summary>
    void Start(HostRecord host, Peer peer, bool back, CancellationToken stop)
    {
        if (Interlocked.CompareExchange(ref peer.Busy, 1, 0) != 0)
        {
            Volatile.Write(ref peer.Again, 1);
            return;
        }
        _ = PushAsync(host, peer, back, stop);
    }

    async Task PushAsync(HostRecord host, Peer peer, bool back, CancellationToken stop)
    {
        var id = Aead.NewKeyId();
        var key = Aead.NewKey();
        try
        {
            var request = new PeerKeyRequest
            {
                FromHost = options.Host, KeyId = id, Key = UnsafeByteOperations.UnsafeWrap(key),
                SendYours = back || !Keys.HasReceiveKey(host.Underlay),
                HasNone = !Keys.HasReceiveKey(host.Underlay),
            };
            var agent = new HostAgent.HostAgentClient(Channels.For(host.AgentEndpoint));
            await agent.PeerKeyAsync(request, deadline: DateTime.UtcNow + CallTimeout, cancellationToken: stop);
            // Acknowledged: the peer opens this key now, so it is safe to seal with it.
            Keys.InstallSend(host.Underlay, id, key);
            Volatile.Write(ref peer.InstalledMs, Environment.TickCount64);
            Volatile.Write(ref peer.BackoffMs, 0);
            LogKeyInstalled(log, host.Name, id);
        }
        catch (Exception e) when (e is RpcException or InvalidOperationException or OperationCanceledException)
        {
            if (stop.IsCancellationRequested) return;
            var backoff = Math.Clamp(Volatile.Read(ref peer.BackoffMs) * 2, FirstRetryMs, LastRetryMs);
            if (Volatile.Read(ref peer.BackoffMs) == 0) LogPushFailed(log, host.Name, e.Message);
            Volatile.Write(ref peer.BackoffMs, backoff);
            Volatile.Write(ref peer.RetryMs, Environment.TickCount64 + backoff);
        }
        finally
        {
            // The wire message wraps this array: zeroing it leaves no copy of the key behind.
            CryptographicOperations.ZeroMemory(key);
            Volatile.Write(ref peer.Busy, 0);
            if (Interlocked.Exchange(ref peer.Again, 0) != 0 && !stop.IsCancellationRequested)
            {
                Volatile.Write(ref peer.RetryMs, 0);
                _asks.Writer.TryWrite((host.Underlay, true));
            }
        }
    }

    /// <summary>
    /// A peer's send key, pushed to this host: installed for opening what <paramref name="fromHost"/>
    /// sends; when it asks, a fresh key of ours goes back to it.
    /// </summary>
    public void Accept(string fromHost, uint keyId, ReadOnlySpan<byte> key, bool sendYours, bool hasNone)
    {
        if (key.Length != Aead.KeySize) throw new ArgumentException($"key must be {Aead.KeySize} bytes");
        if (keyId == 0) throw new ArgumentException("key_id must not be 0");
        var state = dataPlane.State ?? throw new InvalidOperationException("no directory state here yet");
        if (!state.Hosts.TryGetValue(fromHost, out var host) || fromHost == options.Host)
            throw new KeyNotFoundException($"host '{fromHost}' is not in this agent's directory (yet)");
        Keys.InstallReceive(host.Underlay, keyId, key);
        if (!sendYours) return;
        // It has no key of ours (it restarted): sealing on with the old one would lose every datagram to it, a held
        // flush among them (whose TCP segments were acknowledged in its capsule's name, so never sent again), and
        // with a send key in place no failed push would be retried. Until a new one is acked, nothing is sealed
        // towards it, and a drain towards it waits (Engine.Holds.cs). Only then: an unknown key id alone (its
        // other reason to ask) can be a stray or forged datagram, and must not cut a working key.
        if (hasNone) Keys.DropSend(host.Underlay);
        _asks.Writer.TryWrite((host.Underlay, false));
    }

    [LoggerMessage(EventId = 130, Level = LogLevel.Debug, Message = "data-plane key {KeyId:x8} in use towards {Host}")]
    static partial void LogKeyInstalled(ILogger logger, string host, uint keyId);

    [LoggerMessage(EventId = 131, Level = LogLevel.Warning,
        Message = "could not give {Host} a data-plane key ({Error}); retrying, packets to it dropped until then")]
    static partial void LogPushFailed(ILogger logger, string host, string error);
}
