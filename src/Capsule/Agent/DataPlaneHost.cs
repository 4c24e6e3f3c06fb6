using Capsule.Core;
using Capsule.Dir;
using Capsule.DataPlane;
using Capsule.Linux;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent;

/// <summary>
/// Control around the hot path: sets up the host's plumbing, runs the <see cref="Engine"/>, and
/// keeps its translation table in step with the directory by watching it (pushed, not polled).
/// </summary>
internal sealed class DataPlaneHost(AgentOptions options, IDirectory directory, CapsuleRuntime runtime, ILogger<DataPlaneHost> log) : BackgroundService
{
    Tun? _tun;
    UdpEndpoint? _udp;
    Engine? _engine;
    Prefix _pool;
    readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Engine Engine => _engine ?? throw new InvalidOperationException("the data plane is not running yet");
    public Task Ready => _ready.Task;

    public override async Task StartAsync(CancellationToken ct)
    {
        var snapshot = await directory.SnapshotAsync(ct);
        _pool = snapshot.Pool;
        _tun = Tun.Open(options.Tun);
        await HostNetwork.SetupAsync(options.Tun, _pool, options.InnerMtu);
        _udp = UdpEndpoint.Bind(options.Underlay, options.Port);
        _engine = new Engine(_tun, _udp, options.UnderlayMtu);
        _engine.Start();
        await runtime.RecoverAsync(ct);
        await directory.PutHostAsync(new HostRecord(options.Host, options.Underlay, options.Listen), ct);
        log.LogInformation("data plane up: {Tun} mtu {Mtu}, udp {Addr}:{Port}, pool {Pool}", options.Tun, options.InnerMtu, options.Underlay, options.Port, _pool);
        await base.StartAsync(ct);
    }

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await foreach (var state in directory.WatchAsync(stop))
                {
                    var table = TranslationTable.From(state, options.Host);
                    Engine.Publish(table);
                    _ready.TrySetResult();
                    log.LogDebug("table at revision {Rev}: {Routes} remote capsules", state.Revision, table.Count);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { }
            catch (DirectoryException e)
            {
                // Keep forwarding with the last table while the directory is away; retry soon.
                log.LogWarning("directory watch lost: {Error}; retrying", e.Message);
                await Task.Delay(500, stop).ContinueWith(_ => { });
            }
        }
    }

    public override async Task StopAsync(CancellationToken ct)
    {
        await base.StopAsync(ct);
        _engine?.Dispose();
        _udp?.Dispose();
        if (_tun is not null) await HostNetwork.TeardownAsync(options.Tun, _pool);
        _tun?.Dispose();
    }
}
