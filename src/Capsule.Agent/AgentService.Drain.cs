using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Agent;

/// <summary>The drain's calls (docs/drain.md): load for placement, cordon, drain, its status, its stop.</summary>
internal sealed partial class AgentService
{
    public override Task<HostLoadReply> Load(Empty request, ServerCallContext context) =>
        Guard(() => Task.FromResult(drainer.Loads.Local()));

    public override Task<Empty> Cordon(CordonRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            await drainer.SetCordonAsync(request.Cordoned, context.CancellationToken);
            return new Empty();
        });

    public override Task<DrainReport> Drain(DrainRequest request, ServerCallContext context) =>
        Guard(() => drainer.StartAsync(request, context.CancellationToken));

    public override Task<DrainReport> StopDrain(Empty request, ServerCallContext context) =>
        Guard(() => Task.FromResult(drainer.Stop()));

    /// <summary>
    /// The drain's report now, then (follow) a fresh one at each change and at least each second (for the
    /// times), until the drain ends or the caller goes; the drain itself goes on either way.
    /// </summary>
    public override async Task DrainStatus(DrainStatusRequest request, IServerStreamWriter<DrainReport> responseStream,
        ServerCallContext context)
    {
        var ct = context.CancellationToken;
        while (!ct.IsCancellationRequested)
        {
            var run = drainer.Current;
            var changed = run?.Changed;
            var report = drainer.Report();
            await responseStream.WriteAsync(report, ct);
            if (!request.Follow || run is null || run.Ended()) return;
            try
            {
                await changed!.WaitAsync(TimeSpan.FromSeconds(1), ct);
            }
            catch (TimeoutException)
            {
                // a second without change: the next report still updates elapsed and left times
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
