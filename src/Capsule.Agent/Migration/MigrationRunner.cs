using Capsule.Agent.Events;
using Capsule.Agent.Metrics;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Agent.Migration;

/// <summary>
/// One migration as the agent runs it for `capsule migrate` and for a drain alike: the cordon check, then
/// <see cref="MigrationSource"/>, with its start and end recorded as events and metrics. Errors come out as
/// <see cref="RpcException"/>s (what a caller of the API sees).
/// </summary>
internal sealed class MigrationRunner(MigrationSource source, IDirectory directory, EventLog events,
    AgentMetrics metrics)
{
    /// <summary>
    /// Runs the move to its end (moved, or resumed where it was) whatever happens to the caller: stopping
    /// half-way could leave the capsule nowhere. <paramref name="report"/> must not throw; it hears phases and,
    /// from other tasks, a long transfer's progress.
    /// </summary>
    public async Task<MigrateResult> RunAsync(MigrateRequest request, Func<MigrateProgress, Task> report)
    {
        var started = false;
        async Task Report(string phase, string message)
        {
            // The first report comes once the target's checks have passed and it is prepared: it has begun.
            if (!started) events.MigrationStarted(request.Name, request.Target);
            started = true;
            await report(new MigrateProgress { Phase = phase, Message = message });
        }
        MigrateResult result;
        try
        {
            result = await AgentService.Guard(async () =>
            {
                await RefuseCordonedAsync(request.Target);
                return await source.RunAsync(request, Report, CancellationToken.None, report);
            });
        }
        catch (RpcException e)
        {
            var outcome = started ? MigrationOutcome.Failed : MigrationOutcome.Refused;
            events.MigrationThrew(request.Name, request.Target, outcome, e.Status.Detail);
            metrics.Migrated(outcome, null);
            throw;
        }
        events.MigrationEnded(request.Name, request.Target, result);
        metrics.Migrated(EventLog.Outcome(result), result.Times);
        return result;
    }

    /// <summary>Before anything is touched: a cordoned target takes no capsule (the directory refuses the switch
    /// too, but only after the freeze).</summary>
    async Task RefuseCordonedAsync(string target)
    {
        var state = await directory.SnapshotAsync();
        if (state.Hosts.GetValueOrDefault(target) is { Cordoned: true })
            throw new InvalidOperationException(
                DirectoryState.CordonedError(target, "nothing was moved and nothing was changed"));
    }
}
