using Capsule.Agent.Checkpoint;
using Capsule.Agent.Faults;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

/// <summary>
/// Live migration (seed Fig. 5A/5B/6), driven by the capsule's current host: sync (peers hold,
/// the cut is agreed by counts) → freeze and dump (CRIU; the tree is left stopped here) → transfer
/// (a checksummed stream) → restore on the target → switch the directory → flush the held
/// packets to the new host and end the stopped tree here. Each step is journaled first; until
/// the switch any failure, or a crash of this agent, resumes the capsule here as it was. After
/// the switch the old host keeps nothing: no forwarding is left behind.
/// </summary>
internal sealed partial class MigrationSource(CapsuleRuntime runtime, IDirectory directory,
    Criu criu, HoldCoordinator holds, SourceRollback rollback, MigrationJournal journal, FaultInjector faults,
    ILogger<MigrationSource> log)
{
    public const int DefaultHoldPackets = Rpc.ApiDefaults.HoldPackets;
    AgentOptions O => runtime.Options;

    /// <param name="transfer">Where the progress of a long transfer goes (<see cref="TransferMeter"/>).</param>
    public async Task<MigrateResult> RunAsync(MigrateRequest req, Func<string, string, Task> progress,
        CancellationToken ct, Func<MigrateProgress, Task>? transfer = null)
    {
        if (req.Bandwidth < 0) throw new ArgumentException("the bandwidth must be positive (bytes a second)");
        var c = runtime.Find(req.Name)
            ?? throw new KeyNotFoundException($"capsule '{req.Name}' is not on host {O.Host}");
        if (req.Target == O.Host) throw new ArgumentException($"capsule '{req.Name}' is already on {O.Host}");
        if (!CapsuleProcess.IsAlive(c.Pid)) throw new InvalidOperationException($"capsule '{req.Name}' is not running");
        if (!runtime.TryBeginMove(req.Name))
            throw new InvalidOperationException($"capsule '{req.Name}' is already migrating; " +
                "wait for that migration to end");
        try
        {
            var meter = new TransferMeter(req.Bandwidth, transfer ?? (_ => Task.CompletedTask));
            return await MoveAsync(c, req, progress, meter, ct);
        }
        finally
        {
            runtime.EndMove(req.Name);
        }
    }

    async Task<MigrateResult> MoveAsync(LocalCapsule c, MigrateRequest req, Func<string, string, Task> progress,
        TransferMeter meter, CancellationToken ct)
    {
        var state = await directory.SnapshotAsync(ct);
        if (!state.Hosts.TryGetValue(req.Target, out var target))
            throw new ArgumentException($"no host named '{req.Target}'");
        if (target.IsGateway) throw new ArgumentException($"{req.Target} is a gateway; capsules run on hosts");
        var rec = state.Capsules.GetValueOrDefault(c.Name)
            ?? throw new InvalidOperationException($"capsule '{c.Name}' is not in the directory");
        var targetAgent = new HostAgent.HostAgentClient(Channels.For(target.AgentEndpoint));
        await criu.CheckAsync(ct);
        var postCopy = req.Memory == MemoryMode.PostCopy;
        // Seen: the restored tasks, in the capsule's user namespace, may not open a userfaultfd
        // ("uffd: Unable to open an userfaultfd descriptor: Operation not permitted"), and by then the capsule
        // is lost. So such a move is refused before anything happens.
        if (postCopy && c.Root is not null)
            throw new InvalidOperationException($"capsule '{c.Name}' has its own user namespace, and a post-copy " +
                "move of one cannot be restored on this machine kind (userfaultfd is not allowed inside a user " +
                "namespace); move it with --memory stop-and-copy; nothing was changed");
        if (postCopy && await criu.PostCopyProblemAsync(ct) is { } problem)
            throw new InvalidOperationException(
                $"{O.Host} cannot make a post-copy move: {problem}; nothing was changed");
        // Refuse before anything is touched if the target cannot be reached.
        try
        {
            await targetAgent.StatsAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(3), cancellationToken: ct);
        }
        catch (RpcException e)
        {
            throw new InvalidOperationException($"target {req.Target} is unreachable ({e.Status.Detail}); " +
                "nothing was changed");
        }
        var move = new Move(c, req, target, targetAgent, Path.Combine(O.StateDir, "migrations", c.Name), postCopy)
        {
            Meter = meter,
        };
        if (Directory.Exists(move.Work)) Directory.Delete(move.Work, recursive: true);
        // The target checks that it can run the capsule (CPU, CRIU's kernel features, memory, disk), then builds
        // its network: a target that cannot take it refuses here, before anything of the capsule's is touched.
        var prepare = await PrepareRequestAsync(move, ct);
        move.Prepared = targetAgent.PrepareAsync(prepare, cancellationToken: ct).ResponseAsync;
        await RefusedAsync(move);
        journal.Write(move.Record(MoveStep.Syncing, []));
        try
        {
            return await ForwardAsync(move, state, rec, progress, ct);
        }
        catch (Exception e) when (!move.Switched)
        {
            return await FailAsync(move, e, progress);
        }
    }

    /// <summary>Sync, freeze, transfer, restore, switch, flush: the move when nothing fails.</summary>
    async Task<MigrateResult> ForwardAsync(Move m, DirectoryState state, CapsuleRecord rec,
        Func<string, string, Task> progress, CancellationToken ct)
    {
        var r = m.Result;
        var c = m.Capsule;
        r.Memory = m.PostCopy ? MemoryMode.PostCopy : MemoryMode.StopAndCopy;
        // The target's checks and preparation (awaited before this) are in the total, not in the stage's time.
        m.Clock.Lap();
        // The capsule's own files go while it runs and before any peer holds: the freeze sends only what changed.
        await progress("stage", $"sending the capsule's files to {m.Target.Name} while it runs");
        m.Staged = await StagedFiles.SendAsync(m.TargetAgent, c.Name, c.Dir, c.Root?.ToProto(), m.Meter, ct);
        r.StagedBytes = m.Staged.Bytes;
        r.Times.StageMs = m.Clock.Lap();
        if (!m.PostCopy) await OpenPageStreamAsync(m, ct);
        m.Sockets = CapsuleSockets.Read(c.Pid);
        rec = await SyncAsync(m, state, rec, progress, ct);

        await progress("dump", m.PostCopy
            ? "freezing and checkpointing the process tree but its memory (CRIU, post-copy)"
            : "freezing and checkpointing the process tree (CRIU)");
        await faults.HitAsync(FaultPoints.SourceDump);
        var criuClock = System.Diagnostics.Stopwatch.StartNew();
        if (m.PostCopy)
        {
            m.Pages = new PageSocket();
            m.Frozen = await criu.DumpAsync(c.Pid, c.Root is not null, m.Images, m.Pages, lazy: true, ct);
            File.WriteAllText(Path.Combine(m.Images, SourceRollback.PostCopyMark), "");
        }
        else
        {
            await using (m.Meter.Watch("dump", CapsuleFootprint.ResidentBytes(c.Pid)))
                m.Frozen = await DumpStreamingAsync(m, ct);
        }
        r.Times.CriuDumpMs = criuClock.ElapsedMilliseconds;
        journal.Write(m.Record(MoveStep.Frozen, m.Holds!.Holders));
        r.Times.DumpMs = m.Clock.Lap();
        await faults.HitAsync(FaultPoints.SourceAfterDump);

        await progress("transfer", $"sending the image to {m.Target.Name}");
        await m.Prepared!;
        if (m.PostCopy) await OpenPagesAsync(m, ct);
        ReceiveReply reply;
        await using (m.Meter.Watch("transfer", TransferEstimate(m)))
            reply = await SendAsync(m, ct);
        r.Times.FreezeMs = criuClock.ElapsedMilliseconds;
        r.Times.RestoreMs = reply.RestoreMs;
        r.Times.CriuRestoreMs = reply.CriuMs;
        r.Times.TransferMs = m.Clock.Lap() - reply.RestoreMs;
        r.Pid = reply.Pid;
        await faults.HitAsync(FaultPoints.SourceBeforeSwitch);

        await progress("flush", "switching the directory and flushing held packets to the new host");
        await directory.UpdateAsync(c.Name, m.Target.Name, CapsuleState.Running, rec.Revision, null,
            CancellationToken.None);
        // Switched: the capsule runs on the target and the directory says so. Nothing after this
        // line may put it back here; a failure now is reported, not rolled back.
        m.Switched = true;
        journal.Write(m.Record(MoveStep.Switched, m.Holds.Holders));
        await FinishAsync(m);
        r.Times.FlushMs = m.Clock.Lap() - r.Times.PostCopyTailMs;
        r.Times.TotalMs = m.Clock.Total;
        r.Ok = m.TailFailure is null;
        r.Error = m.TailFailure ?? r.Error;
        r.Host = m.Target.Name;
        r.Flows.AddRange(FlowReports.Build(m.Sockets, m.HeldAt, reply.Sockets, HostNames(state)));
        LogMigrated(log, c.Name, m.Target.Name, r.Times.TotalMs, r.ImageBytes, r.Held);
        return r;
    }

    /// <summary>
    /// After the switch: every holder flushes to the new host; the stopped tree and all else here goes.
    /// </summary>
    async Task FinishAsync(Move m)
    {
        try
        {
            var tally = await m.Holds!.ReleaseAsync(m.Target.Underlay);
            Add(m.Result, tally);
            m.HeldAt.AddRange(tally.Holders);
        }
        catch (Exception e)
        {
            // The holders' leases end what the release did not; what is left here must go all the same.
            LogTidyFailed(log, m.Capsule.Name, m.Target.Name, e.Message);
            m.Result.Error = $"moved, but releasing the holds failed: {Describe(e)}";
        }
        if (m.PostCopy) await EndTailAsync(m);
        ClosePages(m);
        try
        {
            await m.Frozen!.CommitAsync();
            await runtime.EvictAsync(m.Capsule);
            if (Environment.GetEnvironmentVariable("CAPSULE_KEEP_IMAGES") is null && Directory.Exists(m.Work))
                Directory.Delete(m.Work, recursive: true);
            journal.Remove(m.Capsule.Name);
        }
        catch (Exception e)
        {
            LogTidyFailed(log, m.Capsule.Name, m.Target.Name, e.Message);
            m.Result.Error = $"moved, but removing what was left on {O.Host} failed: {Describe(e)}";
        }
    }

    /// <summary>Before the switch: the capsule is put back, running here, and the failure reported.</summary>
    async Task<MigrateResult> FailAsync(Move m, Exception e, Func<string, string, Task> progress)
    {
        var r = m.Result;
        r.Ok = false;
        r.Error = Describe(e);
        r.Host = O.Host;
        if (m.Prepared is not null) await m.Prepared.ContinueWith(_ => { }, TaskScheduler.Default);
        if (m.Committed && !await SwitchedAnywayAsync(m))
        {
            await progress("lost", $"failed after the restore on {m.Target.Name} began: {Describe(e)}");
            return await LostAsync(m, e);
        }
        LogFailed(log, m.Capsule.Name, e.Message);
        await progress("rollback", $"failed: {Describe(e)}; resuming the capsule on {O.Host}");
        try
        {
            if (await SwitchedAnywayAsync(m))
            {
                // The switch reached the directory although its answer did not reach us.
                m.Switched = true;
                await FinishAsync(m);
                r.Ok = m.TailFailure is null;
                r.Error = m.TailFailure ?? "";
                r.Host = m.Target.Name;
                r.Times.TotalMs = m.Clock.Total;
                return r;
            }
            // Before the verdict: a post-copy dump told to roll back serves pages still, until its client is gone.
            ClosePages(m);
            var back = await rollback.RunAsync(m.Capsule, m.Frozen, m.Images, m.Holds, [], m.TargetAgent);
            r.Pid = back.Pid;
            Add(r, back.Tally);
            r.ResumedOnSource = true;
            if (Directory.Exists(m.Work)) Directory.Delete(m.Work, recursive: true);
            journal.Remove(m.Capsule.Name);
        }
        catch (Exception x)
        {
            // Keep the images and the journal: they are what is left of the capsule, and the
            // next start of this agent tries again.
            LogRollbackFailed(log, m.Capsule.Name, O.Host, x.Message, m.Work);
            r.Error += $"; resuming it on {O.Host} failed too ({Describe(x)}); its checkpoint is kept in {m.Work}";
        }
        r.Times.TotalMs = m.Clock.Total;
        return r;
    }

    async Task<bool> SwitchedAnywayAsync(Move m)
    {
        if (m.Frozen is null) return false;
        var rec = (await directory.SnapshotAsync()).Capsules.GetValueOrDefault(m.Capsule.Name);
        return rec is { State: CapsuleState.Running } && rec.Host == m.Target.Name;
    }

    static void Add(MigrateResult r, HoldTally t)
    {
        r.Held += t.Held;
        r.Flushed += t.Flushed;
        r.Dropped += t.Dropped;
    }

    internal static string Describe(Exception e) => e is RpcException r ? r.Status.Detail : e.Message;

    [LoggerMessage(EventId = 310, Level = LogLevel.Information,
        Message = "migrated {Name} to {Target} in {Total} ms (image {Bytes} bytes, {Held} held)")]
    static partial void LogMigrated(ILogger logger, string name, string target, long total, long bytes, long held);

    [LoggerMessage(EventId = 311, Level = LogLevel.Warning,
        Message = "migration of {Name} failed: {Error}; resuming it here")]
    static partial void LogFailed(ILogger logger, string name, string error);

    [LoggerMessage(EventId = 312, Level = LogLevel.Error,
        Message = "could not resume {Name} on {Host}: {Error}; its images stay in {Work}")]
    static partial void LogRollbackFailed(ILogger logger, string name, string host, string error, string work);

    [LoggerMessage(EventId = 313, Level = LogLevel.Warning,
        Message = "{Name} moved to {Target}, but tidying up here failed: {Error}")]
    static partial void LogTidyFailed(ILogger logger, string name, string target, string error);
}
