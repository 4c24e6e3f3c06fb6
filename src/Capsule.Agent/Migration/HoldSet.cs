using Capsule.Core;
using Capsule.Protos;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.Migration;

/// <summary>
/// The holds of one move: this host's own and its peers', kept alive while the move lasts (each
/// hold has a lease at its holder; renewing it is asking again), and released together.
/// </summary>
internal sealed partial class HoldSet(HoldCoordinator owner, LocalCapsule capsule, Locator self) : IAsyncDisposable
{
    /// <summary>How often a lease is renewed: well inside the shortest lease a holder grants.</summary>
    static readonly TimeSpan RenewEvery = TimeSpan.FromSeconds(2);

    readonly List<(Locator Addr, HostAgent.HostAgentClient Agent)> _peers = [];
    readonly CancellationTokenSource _stop = new();
    Task _renewing = Task.CompletedTask;

    public long Unaccounted { get; set; }
    public int Count { get { lock (_peers) return _peers.Count; } }
    public Locator[] Holders { get { lock (_peers) return [.. _peers.Select(p => p.Addr)]; } }

    public void Add(Locator addr, HostAgent.HostAgentClient agent)
    {
        lock (_peers) _peers.Add((addr, agent));
    }

    public void StartRenewing(HoldRequest request) => _renewing = RenewAsync(request, _stop.Token);

    async Task RenewAsync(HoldRequest request, CancellationToken stop)
    {
        using var timer = new PeriodicTimer(RenewEvery);
        try
        {
            while (await timer.WaitForNextTickAsync(stop))
            {
                // Our own hold has a lease like any other.
                await owner.DataPlane.Engine.HoldAsync(capsule.Locator, self, request.Capacity, request.UdpDrop, false,
                    TimeSpan.FromMilliseconds(request.LeaseMs));
                (Locator Addr, HostAgent.HostAgentClient Agent)[] peers;
                lock (_peers) peers = [.. _peers];
                foreach (var p in peers)
                {
                    try
                    {
                        await p.Agent.HoldAsync(request, deadline: DateTime.UtcNow.AddSeconds(2),
                            cancellationToken: stop);
                    }
                    catch (RpcException) when (stop.IsCancellationRequested)
                    {
                        // The move ends (its release has begun) while a renewal was under way: a
                        // renewal cancelled now is not a failure, and must not fail the release.
                        return;
                    }
                    catch (RpcException e)
                    {
                        LogRenewFailed(owner.Log, p.Addr, capsule.Name, e.Status.Detail);
                    }
                }
            }
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>Every holder flushes, in order, to <paramref name="to"/> (none: what they hold is dropped).</summary>
    public async Task<HoldTally> ReleaseAsync(Locator to)
    {
        await StopRenewingAsync();
        (Locator Addr, HostAgent.HostAgentClient Agent)[] peers;
        lock (_peers) peers = [.. _peers];
        return await owner.ReleaseAllAsync(peers, capsule.Locator, to);
    }

    /// <summary>
    /// Keeps the holds as they are (a suspended capsule's peers hold until it resumes) but stops renewing.
    /// </summary>
    public Task StopRenewingAsync()
    {
        _stop.Cancel();
        return _renewing;
    }

    public async ValueTask DisposeAsync()
    {
        await StopRenewingAsync();
        _stop.Dispose();
    }

    public Locator Self => self;

    [LoggerMessage(EventId = 301, Level = LogLevel.Warning,
        Message = "could not renew the hold at {Holder} for {Name}: {Error}")]
    static partial void LogRenewFailed(ILogger logger, Locator holder, string name, string error);
}
