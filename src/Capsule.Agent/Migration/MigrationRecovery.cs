using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

/// <summary>
/// At start-up, finishes or rolls back every move this agent had begun when it stopped (crashed,
/// killed, or its host restarted), from the journal: the capsule ends running on exactly one
/// host, the directory agrees, and every hold is released. The rule is the migration's own: before
/// the directory was switched, the move is undone, unless the target already runs the capsule,
/// in which case it is finished; after the switch, only tidying is left.
/// </summary>
internal sealed partial class MigrationRecovery(CapsuleRuntime runtime, DataPlaneHost dataPlane, IDirectory directory,
    HoldCoordinator holds, SourceRollback rollback, MigrationJournal journal, ILogger<MigrationRecovery> log)
    : BackgroundService
{
    AgentOptions O => runtime.Options;

    /// <summary>How long a dump the dead agent left under way may take to reach its verdict.</summary>
    static readonly TimeSpan DumpPatience = TimeSpan.FromSeconds(60);

    protected override async Task ExecuteAsync(CancellationToken stop)
    {
        await dataPlane.Ready.WaitAsync(stop);
        DropStagedFiles();
        foreach (var record in journal.Pending())
        {
            if (!runtime.TryBeginMove(record.Name)) continue;
            try
            {
                await RecoverAsync(record, stop);
                journal.Remove(record.Name);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // The journal stays: the next start tries again.
                LogRecoveryFailed(log, record.Name, e.Message);
            }
            finally
            {
                runtime.EndMove(record.Name);
            }
        }
    }

    /// <summary>
    /// Files other hosts sent ahead of moves into this one (<see cref="StagedFiles"/>) that the dead agent never
    /// took: its moves are over, and a source that goes on is told at its image that they are gone.
    /// </summary>
    void DropStagedFiles()
    {
        var migrations = Path.Combine(O.StateDir, "migrations");
        if (!Directory.Exists(migrations)) return;
        foreach (var staged in Directory.EnumerateDirectories(migrations, "*.staged"))
            Directory.Delete(staged, recursive: true);
    }

    async Task RecoverAsync(MoveRecord m, CancellationToken ct)
    {
        var state = await directory.SnapshotAsync(ct);
        var rec = state.Capsules.GetValueOrDefault(m.Name);
        var c = runtime.Find(m.Name);
        LogRecovering(log, m.Kind, m.Name, m.Step, rec?.Host ?? "-", rec?.State.ToString() ?? "-");
        var frozen = await FrozenTree.ReattachAsync(m.Pid, m.Images, DumpPatience, ct);
        if (rec is not null && Done(m, rec))
        {
            await FinishAsync(m, c, frozen, state);
            return;
        }
        if (rec is null || c is null)
        {
            // Removed meanwhile, or nothing of it left here to resume: end the holds where the directory says.
            var to = rec is { State: CapsuleState.Running } && state.Hosts.TryGetValue(rec.Host, out var h)
                ? h.Underlay
                : Locator.None;
            await holds.ReleaseAsync(m.Locator, m.Holders, to, state);
            return;
        }
        if (m.Kind == MoveKind.Migrate && m.Step == MoveStep.Frozen && await TargetRunsAsync(m, state, ct))
        {
            // The target restored it before we went down: finish the move rather than undo it.
            await directory.UpdateAsync(m.Name, m.Target, CapsuleState.Running, rec.Revision, null, ct);
            await FinishAsync(m, c, frozen, await directory.SnapshotAsync(ct));
            return;
        }
        if (frozen is null && !CapsuleProcess.IsAlive(c.Pid)
            && File.Exists(Path.Combine(m.Images, SourceRollback.PostCopyMark)))
        {
            // A post-copy move whose restore had begun: the dump served the memory to this agent's relay
            // and ended the tree when the relay went with the agent. No copy is left to resume.
            await holds.ReleaseAsync(m.Locator, m.Holders, Locator.None, state);
            if (rec.Host == O.Host)
                await runtime.MarkStoppedAsync(m.Name, "lost: its post-copy move was cut short when the agent of " +
                    $"{O.Host} stopped");
            else
                await runtime.EvictAsync(c); // switched: the target has marked it, and nothing of it stays here
            LogLost(log, m.Name);
            Directory.Delete(Path.GetDirectoryName(m.Images)!, recursive: true);
            return;
        }
        HostAgent.HostAgentClient? targetAgent = null;
        if (m.Kind == MoveKind.Migrate && state.Hosts.TryGetValue(m.Target, out var t))
            targetAgent = new HostAgent.HostAgentClient(Channels.For(t.AgentEndpoint));
        await rollback.RunAsync(c, frozen, m.Images, null, m.Holders, targetAgent);
        if (Directory.Exists(Path.GetDirectoryName(m.Images)))
            Directory.Delete(Path.GetDirectoryName(m.Images)!, recursive: true);
    }

    /// <summary>The directory already names the capsule's new home (another host, or its file).</summary>
    bool Done(MoveRecord m, CapsuleRecord rec) =>
        m.Kind == MoveKind.Migrate
            ? rec.Host == m.Target && rec.State == CapsuleState.Running
            : rec.State == CapsuleState.Suspended && rec.Host == O.Host;

    async Task FinishAsync(MoveRecord m, LocalCapsule? c, FrozenTree? frozen, DirectoryState state)
    {
        if (m.Kind == MoveKind.Migrate)
            await holds.ReleaseAsync(m.Locator, m.Holders, state.Hosts[m.Target].Underlay, state);
        if (frozen is not null) await frozen.CommitAsync();
        if (c is not null) await runtime.EvictAsync(c);
        if (Directory.Exists(Path.GetDirectoryName(m.Images)))
            Directory.Delete(Path.GetDirectoryName(m.Images)!, recursive: true);
        LogFinished(log, m.Name);
    }

    /// <summary>Asks the target (which may itself be restarting) whether the capsule runs there.</summary>
    async Task<bool> TargetRunsAsync(MoveRecord m, DirectoryState state, CancellationToken ct)
    {
        if (!state.Hosts.TryGetValue(m.Target, out var t)) return false;
        var agent = new HostAgent.HostAgentClient(Channels.For(t.AgentEndpoint));
        for (var attempt = 0; attempt < 20; attempt++)
        {
            try
            {
                var info = await agent.GetAsync(new NameRequest { Name = m.Name },
                    deadline: DateTime.UtcNow.AddSeconds(2), cancellationToken: ct);
                return info.Pid > 0;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
                return false;
            }
            catch (RpcException)
            {
                await Task.Delay(500, ct); // its agent is away; a supervisor brings it back
            }
        }
        return false;
    }

    [LoggerMessage(EventId = 350, Level = LogLevel.Warning,
        Message = "unfinished {Kind} of {Name} found at step {Step} (directory: {Host}, {State}); recovering")]
    static partial void LogRecovering(ILogger logger, MoveKind kind, string name, MoveStep step, string host,
        string state);

    [LoggerMessage(EventId = 351, Level = LogLevel.Information, Message = "finished the interrupted move of {Name}")]
    static partial void LogFinished(ILogger logger, string name);

    [LoggerMessage(EventId = 353, Level = LogLevel.Error,
        Message = "{Name} is lost: its post-copy move was cut short by this agent's end; it is marked stopped")]
    static partial void LogLost(ILogger logger, string name);

    [LoggerMessage(EventId = 352, Level = LogLevel.Error,
        Message = "could not recover the move of {Name}: {Error}; will retry at next start")]
    static partial void LogRecoveryFailed(ILogger logger, string name, string error);
}
