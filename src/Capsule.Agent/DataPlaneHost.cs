using Capsule.Agent.DataPlane;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent;

/// <summary>
/// Control around the hot path: sets up the host's plumbing, runs the <see cref="Engine"/>, and
/// keeps its translation table in step with the directory by watching it (pushed, not polled).
/// </summary>
internal sealed partial class DataPlaneHost(AgentOptions options, IDirectory directory, CapsuleRuntime runtime,
    ILogger<DataPlaneHost> log, Events.EventLog events) : BackgroundService
{
    List<Lane> _lanes = [];
    Engine? _engine;
    Prefix _pool;
    readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly Lock _tableGate = new();
    DirectoryState? _state;
    TranslationTable? _table;
    System.Collections.Immutable.ImmutableDictionary<Locator, Locator> _pins =
        System.Collections.Immutable.ImmutableDictionary<Locator, Locator>.Empty;

    public Engine Engine => _engine ?? throw new InvalidOperationException("the data plane is not running yet");
    /// <summary>The data plane's keys per peer host, installed by <see cref="KeyExchange"/>.</summary>
    public PeerKeys Keys { get; } = new(options.DataPlaneMode, options.Lanes);
    /// <summary>Called (on the watch's thread) after a directory update that put or deleted hosts.</summary>
    public Action<DirectoryState>? OnHostsChanged { get; set; }
    public Task Ready => _ready.Task;

    public override async Task StartAsync(CancellationToken ct)
    {
        events.AgentStarted();
        var snapshot = await directory.SnapshotAsync(ct);
        _pool = snapshot.Pool;
        var lanes = _lanes = OpenLanes();
        await HostNetwork.SetupAsync(options.Tun, _pool, options.InnerMtu, options.Underlay,
            options.IcmpFrom.Length > 0 ? options.IcmpSource : null);
        var spool = Directory.CreateDirectory(options.HoldSpool).FullName;
        _engine = new Engine(lanes, options.UnderlayMtu, Keys, spool)
        {
            OnHoldChange = events.HoldChanged,
            MaxFlows = options.MaxTcpFlows,
            MaxHolds = options.MaxHolds,
            MaxHoldPackets = options.MaxHoldPackets,
            MaxHoldLease = options.MaxHoldLease,
        };
        _engine.Start();
        await RecoverHoldsAsync();
        await runtime.RecoverAsync(ct);
        _engine.IcmpSource = options.IcmpSource;
        // A cordon outlives a restart of the agent: only `capsule uncordon` lifts it.
        var cordoned = (await directory.SnapshotAsync(ct)).Hosts.GetValueOrDefault(options.Host)?.Cordoned ?? false;
        await directory.PutHostAsync(
            new HostRecord(options.Host, options.Underlay, options.Listen, options.Serves, cordoned), ct);
        log.LogInformation("data plane up: {Tun} mtu {Mtu}, udp {Addr}:{Port}, {Lanes} lanes, pool {Pool}",
            options.Tun, options.InnerMtu, options.Underlay, options.Port, lanes.Count, _pool);
        await base.StartAsync(ct);
    }

    /// <summary>
    /// The lanes: a TUN queue and a socket each (one TUN, one socket, when there is one lane). What was opened is
    /// closed again when a later one fails.
    /// </summary>
    List<Lane> OpenLanes()
    {
        var count = options.Lanes;
        var lanes = new List<Lane>(count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                var tun = Tun.Open(options.Tun, options.Offloads, multiQueue: count > 1);
                UdpEndpoint? udp = null, sender = null;
                try
                {
                    udp = UdpEndpoint.Bind(options.Underlay, options.Port, options.Offloads, reusePort: count > 1);
                    var senderPort = options.Port + i;
                    if (i > 0 && senderPort <= 65535) sender = UdpEndpoint.TryBindSender(options.Underlay, senderPort);
                    if (i > 0 && sender is null) LogNoSenderPort(log, i, senderPort);
                    lanes.Add(new Lane(i, tun, udp, sender));
                }
                catch
                {
                    sender?.Dispose();
                    udp?.Dispose();
                    tun.Dispose();
                    throw;
                }
            }
            if (count > 1 && !lanes[0].Udp.SpreadByPort(count)) LogNoSpread(log);
            return lanes;
        }
        catch
        {
            foreach (var lane in lanes) lane.Dispose();
            throw;
        }
    }

    [LoggerMessage(EventId = 111, Level = LogLevel.Warning,
        Message = "data-plane lane {Lane} sends from the agent's port: UDP port {Port} could not be bound (taken, or " +
            "past 65535); its datagrams may share a receiving lane with another's at the peer")]
    static partial void LogNoSenderPort(ILogger logger, int lane, int port);

    [LoggerMessage(EventId = 112, Level = LogLevel.Warning,
        Message = "the kernel refused the program that spreads the data-plane lanes by port; its hash spreads them")]
    static partial void LogNoSpread(ILogger logger);

    /// <summary>Holds a previous agent left (it died while it held): held again, and logged.</summary>
    async Task RecoverHoldsAsync()
    {
        var (holds, packets, unusable) = await Engine.RecoverHoldsAsync(options.HoldLease);
        if (holds > 0)
            log.LogWarning("took back {Holds} holds with {Packets} packets from the previous agent; they end with " +
                "their source's release or in {Lease} s", holds, packets, options.HoldLease.TotalSeconds);
        foreach (var u in unusable) log.LogWarning("hold spool deleted, of no use: {Problem}", u);
    }

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        _ = SweepAsync(stop);
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await foreach (var update in directory.WatchAsync(stop))
                {
                    Apply(update);
                    events.DirectoryChanged(update);
                    if (update.Full || update.Changes.Any(c => c.Capsule is null))
                    {
                        await RouteGatewaysAsync(update.State);
                        OnHostsChanged?.Invoke(update.State);
                    }
                    _ready.TrySetResult();
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
            catch (DirectoryException e)
            {
                // Keep forwarding with the last table while the directory is away; retry soon, so a
                // restarted directory's changes (a migration's switch) reach this table quickly.
                log.LogWarning("directory watch lost: {Error}; retrying", e.Message);
                await Task.Delay(WatchRetry, stop).ContinueWith(_ => { });
            }
        }
    }

    static readonly TimeSpan WatchRetry = TimeSpan.FromMilliseconds(200);

    public DirectoryState? State { get { lock (_tableGate) return _state; } }

    /// <summary>Housekeeping: TCP flows the pause tracks are forgotten once idle (their connections closed).</summary>
    async Task SweepAsync(CancellationToken stop)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(30));
        try
        {
            while (await timer.WaitForNextTickAsync(stop))
                if (Engine.SweepFlows(TimeSpan.FromMinutes(2)) is > 0 and var n)
                    log.LogDebug("forgot {Count} idle TCP flows", n);
        }
        catch (OperationCanceledException) { }
    }

    readonly HashSet<Prefix> _gatewayRoutes = [];

    /// <summary>
    /// Ordinary networks behind gateways are routed into the TUN too, so capsules reach them through the overlay.
    /// </summary>
    async Task RouteGatewaysAsync(DirectoryState state)
    {
        var want = state.Hosts.Values.Where(h => h.Name != options.Host).SelectMany(h => h.ServedPrefixes).ToHashSet();
        foreach (var p in want.Except(_gatewayRoutes).ToList())
        {
            await Cmd.Ip(null, "route", "replace", p.ToString(), "dev", options.Tun);
            _gatewayRoutes.Add(p);
        }
        foreach (var p in _gatewayRoutes.Except(want).ToList())
        {
            await Cmd.TryIp(null, "route", "del", p.ToString(), "dev", options.Tun);
            _gatewayRoutes.Remove(p);
        }
    }

    /// <summary>
    /// Routes <paramref name="locator"/> to <paramref name="host"/> (this host's address: local)
    /// ahead of the directory, until the directory says the same.
    /// </summary>
    public void Pin(Locator locator, Locator host)
    {
        lock (_tableGate)
        {
            _pins = _pins.SetItem(locator, host);
            Rebuild(_state);
        }
    }

    public void Unpin(Locator locator)
    {
        lock (_tableGate)
        {
            _pins = _pins.Remove(locator);
            Rebuild(_state);
        }
    }

    /// <summary>
    /// A directory update into the table: a whole state is built afresh, changes are applied one by
    /// one (O(change), see <see cref="TranslationTable.With"/>), so a host's cost per change does not
    /// grow with the number of capsules.
    /// </summary>
    void Apply(DirectoryUpdate update)
    {
        lock (_tableGate)
        {
            _state = update.State;
            var unpinned = update.Full ? SettlePins(update.State, update.State.Capsules.Values)
                : SettlePins(update.State, update.Changes.Select(c => c.Capsule).OfType<CapsuleRecord>());
            _table = update.Full || unpinned || _table is null
                ? TranslationTable.From(update.State, options.Host, _pins)
                : _table.With(update.State, update.Changes, options.Host, _pins);
            Engine.Publish(_table);
            log.LogDebug("table at revision {Rev}: {Routes} remote capsules, {Pending} changes since built, " +
                "{Pins} pinned", update.State.Revision, _table.Count, _table.Pending, _pins.Count);
        }
    }

    /// <summary>
    /// A pin has done its job once the directory routes the locator the same way; only the records
    /// that changed need a look. True when a pin went (the table is then built afresh: rare).
    /// </summary>
    bool SettlePins(DirectoryState state, IEnumerable<CapsuleRecord> changed)
    {
        if (_pins.IsEmpty) return false;
        var before = _pins.Count;
        foreach (var c in changed)
            if (_pins.TryGetValue(c.Locator, out var host) && c.State == CapsuleState.Running
                && state.Hosts.TryGetValue(c.Host, out var h) && h.Underlay == host)
                _pins = _pins.Remove(c.Locator);
        return _pins.Count != before;
    }

    /// <summary>After a pin is set or lifted: the table afresh from the last state (pins are few and brief).</summary>
    void Rebuild(DirectoryState? state)
    {
        if (state is null) return;
        lock (_tableGate)
        {
            // The directory may have agreed before the pin was set: no later change would lift it.
            SettlePins(state, state.Capsules.Values);
            _table = TranslationTable.From(state, options.Host, _pins);
            Engine.Publish(_table);
        }
    }

    /// <summary>
    /// The data plane goes down with the agent; the capsules do not (the next agent re-adopts them, see
    /// <see cref="CapsuleRuntime.RecoverAsync"/>). While any runs without an agent, the host's filter stays: it
    /// is what keeps a capsule to its own locator and off the host and the underlay.
    /// </summary>
    public override async Task StopAsync(CancellationToken ct)
    {
        await base.StopAsync(ct);
        _engine?.Dispose();
        var running = runtime.All.Count(c => CapsuleProcess.IsAlive(c.Pid));
        if (_lanes.Count > 0) await HostNetwork.TeardownAsync(options.Tun, _pool, keepFilter: running > 0);
        foreach (var lane in _lanes) lane.Dispose(); // the TUN and the sockets
        if (running > 0) LogCapsulesKeepRunning(log, running);
    }

    [LoggerMessage(EventId = 110, Level = LogLevel.Information,
        Message = "data plane down; {Count} capsules keep running, kept in by the host's filter, until the next agent")]
    static partial void LogCapsulesKeepRunning(ILogger logger, int count);
}
