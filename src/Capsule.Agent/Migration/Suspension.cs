using Capsule.Checkpoint;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Linux;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

/// <summary>
/// Suspend to a file and resume on any host (the seed's "suspend them on disk for later revival
/// on the same or a different machine"): the migration's sync and dump, with a file in the middle
/// instead of a target. While the capsule sleeps its locator stays reserved in the directory;
/// its peers hold its packets for as long as their leases last, then drop them (counted).
/// </summary>
internal sealed partial class Suspension(CapsuleRuntime runtime, IDirectory directory, Criu criu,
    HoldCoordinator holds, SourceRollback rollback, MigrationTarget target, MigrationJournal journal,
    ILogger<Suspension> log)
{
    AgentOptions O => runtime.Options;

    /// <summary>The directory's note on a suspended capsule: where its file is and which suspension it is.</summary>
    static string SuspendDetail(string file, string id) => $"file={file} id={id}";

    public async Task<SuspendResult> SuspendAsync(SuspendRequest req, CancellationToken ct)
    {
        var c = runtime.Find(req.Name)
            ?? throw new KeyNotFoundException($"capsule '{req.Name}' is not on host {O.Host}");
        CheckFile(req.File);
        if (!CapsuleProcess.IsAlive(c.Pid)) throw new InvalidOperationException($"capsule '{req.Name}' is not running");
        await criu.CheckAsync(ct);
        if (!runtime.TryBeginMove(req.Name))
            throw new InvalidOperationException($"capsule '{req.Name}' is already migrating or being suspended");
        try
        {
            return await SuspendLockedAsync(c, req, ct);
        }
        finally
        {
            runtime.EndMove(req.Name);
        }
    }

    static void CheckFile(string file)
    {
        if (!Path.IsPathFullyQualified(file))
            throw new ArgumentException($"the file must be an absolute path, not '{file}'");
        if (File.Exists(file))
            throw new ArgumentException($"{file} exists already; choose another file (nothing is overwritten)");
        if (!Directory.Exists(Path.GetDirectoryName(file)))
            throw new ArgumentException($"folder {Path.GetDirectoryName(file)} does not exist");
    }

    async Task<SuspendResult> SuspendLockedAsync(LocalCapsule c, SuspendRequest req, CancellationToken ct)
    {
        var state = await directory.SnapshotAsync(ct);
        var rec = state.Capsules[c.Name];
        var clock = new PhaseClock();
        var times = new PhaseTimes();
        var work = Path.Combine(O.StateDir, "migrations", c.Name);
        var images = Path.Combine(work, "images");
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        MoveRecord Record(MoveStep step, Locator[] holders) =>
            new(MoveKind.Suspend, c.Name, c.Locator, req.File, step, holders, images, c.Pid);
        journal.Write(Record(MoveStep.Syncing, []));
        HoldSet? held = null;
        FrozenTree? frozen = null;
        var suspended = false;
        try
        {
            var capacity = req.HoldPackets > 0 ? req.HoldPackets : MigrationSource.DefaultHoldPackets;
            held = await holds.BeginAsync(c, state, capacity, ct);
            journal.Write(Record(MoveStep.Syncing, held.Holders));
            rec = await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Migrating, rec.Revision, "suspending", ct);
            times.SyncMs = clock.Lap();
            var procs = Processes(c.Pid);
            var conns = await ConnectionsAsync(c.Netns);
            await Quiesce.UdpQueuesAsync(c.Pid, ct);
            await CapsuleNetwork.SealAsync(c.Locator);
            frozen = await criu.DumpAsync(c.Pid, images, ct);
            journal.Write(Record(MoveStep.Frozen, held.Holders));
            times.DumpMs = clock.Lap();

            var payload = Path.Combine(work, "payload.tar");
            await ImageArchive.WriteAsync(payload, images, c.Dir, ct);
            var id = Guid.NewGuid().ToString("n");
            var meta = new SuspendMeta(SuspendFile.Version, id, c.Name, c.Locator.ToString(), c.Command, O.Host,
                DateTime.UtcNow, procs, conns, 0) { UdpDrop = c.UdpDrop };
            await SuspendFile.WriteAsync(req.File, meta, payload, ct);
            // The file is whole on disk before the directory says so: a crash before this line
            // leaves the capsule recorded as migrating here (recovery resumes it), never as
            // suspended to a half file.
            await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Suspended, rec.Revision,
                SuspendDetail(req.File, id), CancellationToken.None);
            suspended = true;
            journal.Write(Record(MoveStep.Switched, held.Holders));
            times.TransferMs = clock.Lap();
            // Gone from this host; the holds (ours for local peers, the peers' own) last their leases.
            await held.StopRenewingAsync();
            await frozen.CommitAsync();
            await runtime.EvictAsync(c);
            Directory.Delete(work, recursive: true);
            journal.Remove(c.Name);
            times.TotalMs = clock.Total;
            LogSuspended(log, c.Name, req.File);
            return new SuspendResult
            {
                File = req.File, Bytes = new FileInfo(req.File).Length, Times = times, Peers = held.Count,
                Processes = procs.Count, Connections = conns.Count,
            };
        }
        catch (Exception e) when (!suspended)
        {
            LogSuspendFailed(log, c.Name, e.Message);
            File.Delete(req.File);
            File.Delete(req.File + ".partial");
            try
            {
                await rollback.RunAsync(c, frozen, images, held, [], null);
            }
            catch (Exception r)
            {
                throw new InvalidOperationException(
                    $"suspend failed ({MigrationSource.Describe(e)}) and resuming it on {O.Host} failed too " +
                    $"({MigrationSource.Describe(r)}); its checkpoint is kept in {work}");
            }
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            journal.Remove(c.Name);
            throw new InvalidOperationException(
                $"suspend failed: {MigrationSource.Describe(e)}; capsule {c.Name} was resumed on {O.Host}");
        }
    }

    public async Task<ResumeResult> ResumeAsync(ResumeRequest req, CancellationToken ct)
    {
        var clock = new PhaseClock();
        SuspendMeta meta;
        try
        {
            meta = await SuspendFile.ReadMetaAsync(req.File, verify: true, ct);
        }
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException)
        {
            throw new ArgumentException(e.Message);
        }
        var state = await directory.SnapshotAsync(ct);
        var rec = CheckResumable(meta, state);
        await criu.CheckAsync(ct);
        if (!runtime.TryBeginMove(meta.Name))
            throw new InvalidOperationException($"capsule '{meta.Name}' is being resumed already");
        var work = Path.Combine(O.StateDir, "migrations", meta.Name + ".resume");
        try
        {
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            Directory.CreateDirectory(work);
            var archive = Path.Combine(work, "payload.tar");
            await SuspendFile.ExtractPayloadAsync(req.File, archive, ct);
            var loc = Locator.Parse(meta.Locator);
            await CapsuleNetwork.BuildAsync(O.CapsuleNetns(meta.Name), loc, O.InnerMtu);
            await Criu.LockForRestoreAsync(O.CapsuleNetns(meta.Name));
            target.MarkPrepared(meta.Name, loc);
            var restored = await target.RestoreHereAsync(meta.Name, loc, meta.Command, meta.UdpDrop, archive, work, ct);
            try
            {
                // Only one resume of a file wins: the revision must still be the suspended one.
                await directory.UpdateAsync(meta.Name, O.Host, CapsuleState.Running, rec.Revision, null,
                    CancellationToken.None);
            }
            catch (DirectoryException)
            {
                if (runtime.Find(meta.Name) is { } c) await runtime.EvictAsync(c);
                throw;
            }
            // Every host may be holding the capsule's packets (its peers and its old host): all flush here.
            var self = state.Hosts[O.Host].Underlay;
            var tally = await holds.ReleaseAsync(loc, state.Hosts.Values.Select(h => h.Underlay), self, state);
            LogResumed(log, meta.Name, req.File, restored.Pid);
            return new ResumeResult
            {
                Name = meta.Name, Locator = meta.Locator, Host = O.Host, Pid = restored.Pid, RestoreMs = restored.Ms,
                TotalMs = clock.Total, Flushed = tally.Flushed, Dropped = tally.Dropped,
            };
        }
        finally
        {
            runtime.EndMove(meta.Name);
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        }
    }

    CapsuleRecord CheckResumable(SuspendMeta meta, DirectoryState state)
    {
        if (!state.Capsules.TryGetValue(meta.Name, out var rec) || rec.Locator.ToString() != meta.Locator)
            throw new InvalidOperationException(
                $"capsule '{meta.Name}' ({meta.Locator}) is no longer in the directory: " +
                "its locator was released, so this file cannot be resumed");
        if (rec.State != CapsuleState.Suspended)
            throw new InvalidOperationException(
                $"capsule '{meta.Name}' is {rec.State.ToString().ToLowerInvariant()} on {rec.Host}, " +
                "not suspended: this file was resumed already");
        if (rec.Detail is null || !rec.Detail.EndsWith("id=" + meta.Id, StringComparison.Ordinal))
            throw new InvalidOperationException(
                $"capsule '{meta.Name}' was suspended again since this file was made; " +
                $"resume its latest file ({rec.Detail})");
        if (runtime.Find(meta.Name) is not null)
            throw new InvalidOperationException($"capsule '{meta.Name}' already runs on {O.Host}");
        if (O.Serves.Length > 0) throw new ArgumentException($"{O.Host} is a gateway; capsules run on hosts");
        return rec;
    }

    /// <summary>The processes in the capsule's PID namespace, as (pid inside, command line).</summary>
    static List<SuspendMeta.Proc> Processes(int pid)
    {
        var ns = new FileInfo($"/proc/{pid}/ns/pid").LinkTarget;
        var list = new List<SuspendMeta.Proc>();
        foreach (var d in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                if (!int.TryParse(Path.GetFileName(d), out _)
                    || new FileInfo(Path.Combine(d, "ns/pid")).LinkTarget != ns)
                    continue;
                var inner = File.ReadLines(Path.Combine(d, "status")).First(l => l.StartsWith("NSpid:"))
                    .Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries).Last();
                var cmd = File.ReadAllText(Path.Combine(d, "cmdline")).Replace('\0', ' ').Trim();
                list.Add(new SuspendMeta.Proc(int.Parse(inner), cmd));
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return [.. list.OrderBy(p => p.Pid)];
    }

    /// <summary>The capsule's TCP connections and listeners, as `ss` shows them in its namespace.</summary>
    static async Task<List<string>> ConnectionsAsync(string netns)
    {
        var r = await Cmd.TryRunAsync("ip", ["netns", "exec", netns, "ss", "-Htan"]);
        if (!r.Ok) return [];
        return [.. r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => string.Join(' ', l.Split(' ', StringSplitOptions.RemoveEmptyEntries)))];
    }

    [LoggerMessage(EventId = 340, Level = LogLevel.Information, Message = "suspended {Name} to {File}")]
    static partial void LogSuspended(ILogger logger, string name, string file);

    [LoggerMessage(EventId = 341, Level = LogLevel.Warning,
        Message = "suspend of {Name} failed: {Error}; resuming it here")]
    static partial void LogSuspendFailed(ILogger logger, string name, string error);

    [LoggerMessage(EventId = 342, Level = LogLevel.Information, Message = "resumed {Name} from {File} as pid {Pid}")]
    static partial void LogResumed(ILogger logger, string name, string file, int pid);
}
