using System.Collections.Concurrent;
using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
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
/// The file travels to and from the CLI over gRPC (<see cref="FileTransfer"/>): the agent never
/// opens a path the CLI names, since the two share no file system.
/// </summary>
internal sealed partial class Suspension(CapsuleRuntime runtime, IDirectory directory, Criu criu,
    HoldCoordinator holds, SourceRollback rollback, MigrationTarget target, MigrationJournal journal,
    ILogger<Suspension> log)
{
    AgentOptions O => runtime.Options;

    /// <summary>Files being received for a resume now (in <see cref="Incoming"/>): not leftovers.</summary>
    readonly ConcurrentDictionary<string, byte> _receiving = new();

    /// <summary>Suspend files this host wrote, kept until the CLI confirms it has its copy.</summary>
    string KeptFolder => Path.Combine(O.StateDir, "suspended");

    string KeptFile(string name, string id) => Path.Combine(KeptFolder, $"{name}.{id}.capsule");

    /// <summary>Suspend files arriving from the CLI for a resume, deleted once it is over, whatever its end.</summary>
    string Incoming => Path.Combine(O.StateDir, "incoming");

    static string? DetailPart(string? detail, string key) =>
        detail?.Split(' ').FirstOrDefault(p => p.StartsWith(key + "=", StringComparison.Ordinal))?[(key.Length + 1)..];

    /// <summary>The directory's note on a suspended capsule: where its file is and which suspension it is.</summary>
    static string SuspendDetail(string file, string id) => $"file={file} id={id}";

    public async Task<SuspendResult> SuspendAsync(SuspendRequest req, CancellationToken ct)
    {
        var c = runtime.Find(req.Name)
            ?? throw new KeyNotFoundException($"capsule '{req.Name}' is not on host {O.Host}");
        if (req.File.Length == 0) throw new ArgumentException("the request names no file (the caller's name for it)");
        if (!CapsuleProcess.IsAlive(c.Pid)) throw new InvalidOperationException($"capsule '{req.Name}' is not running");
        await criu.CheckAsync(ct);
        await PruneKeptAsync(ct);
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
        var id = Guid.NewGuid().ToString("n");
        var kept = KeptFile(c.Name, id);
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
            frozen = await criu.DumpAsync(c.Pid, c.Root is not null, images, null, lazy: false, ct);
            journal.Write(Record(MoveStep.Frozen, held.Holders));
            times.DumpMs = clock.Lap();

            var payload = Path.Combine(work, "payload.tar");
            await ImageArchive.WriteAsync(payload, images, c.Dir, ct);
            var meta = new SuspendMeta(SuspendFile.Version, id, c.Name, c.Locator.ToString(), c.Command, O.Host,
                DateTime.UtcNow, procs, conns, 0)
            {
                UdpDrop = c.UdpDrop, Root = c.Root?.ToMeta(), Limits = c.Limits?.ToMeta(),
            };
            PrivateFiles.CreateFolder(KeptFolder);
            // Signed with this host's cluster key when it has one (a Tls section), so that a resume on any
            // host of the cluster can tell the file was written by one of its hosts and not forged.
            await SuspendFile.WriteAsync(kept, meta, payload, ct, Channels.Identity);
            // The file is whole on disk here before the directory says so: a crash before this line
            // leaves the capsule recorded as migrating here (recovery resumes it), never as
            // suspended to a half file. The CLI's copy comes after, from this one (SendKeptAsync).
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
            LogSuspended(log, c.Name, kept);
            return new SuspendResult
            {
                File = req.File, Bytes = new FileInfo(kept).Length, Times = times, Peers = held.Count,
                Processes = procs.Count, Connections = conns.Count, Id = id, Kept = kept,
            };
        }
        catch (Exception e) when (!suspended)
        {
            LogSuspendFailed(log, c.Name, e.Message);
            File.Delete(kept);
            File.Delete(kept + ".partial");
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

    /// <summary>
    /// Sends the file this host keeps of a suspension to the caller. If that fails (the CLI went
    /// away, the network broke) the file stays here: the capsule exists nowhere else, so it is
    /// deleted only when the CLI confirms it has its copy (<see cref="ConfirmAsync"/>).
    /// </summary>
    public async Task SendKeptAsync(SuspendResult r, IAsyncStreamWriter<FileChunk> to, CancellationToken ct)
    {
        try
        {
            await FileTransfer.SendAsync(to, r.Kept, new FileChunk { Suspended = r }, null, ct);
        }
        catch (Exception e)
        {
            LogSendFailed(log, r.Kept, e.Message);
            throw;
        }
    }

    /// <summary>What this host keeps of a suspended capsule's file (its latest suspension, or <c>id</c>).</summary>
    public async Task<SuspendResult> KeptAsync(SuspendedRef req, CancellationToken ct)
    {
        CheckRef(req, idRequired: false);
        var rec = (await directory.SnapshotAsync(ct)).Capsules.GetValueOrDefault(req.Name)
            ?? throw new KeyNotFoundException($"no capsule named '{req.Name}'");
        if (rec.State != CapsuleState.Suspended)
            throw new InvalidOperationException($"capsule '{req.Name}' is {rec.State.ToString().ToLowerInvariant()} " +
                $"on {rec.Host}, not suspended: there is no file to fetch");
        var id = req.Id.Length > 0 ? req.Id : DetailPart(rec.Detail, "id") ?? "";
        var kept = KeptFile(req.Name, id);
        if (!File.Exists(kept))
            throw new KeyNotFoundException($"{O.Host} keeps no file of capsule '{req.Name}' (suspension {id}): " +
                $"it was suspended on {rec.Host}, or its file was delivered and confirmed");
        var meta = await SuspendFile.ReadMetaAsync(kept, verify: false, ct);
        return new SuspendResult
        {
            File = DetailPart(rec.Detail, "file") ?? "", Bytes = new FileInfo(kept).Length, Times = new PhaseTimes(),
            Processes = meta.Processes.Count, Connections = meta.Connections.Count, Id = id, Kept = kept,
        };
    }

    /// <summary>The CLI has the whole file and checked it: this host's copy goes.</summary>
    public async Task ConfirmAsync(SuspendedRef req, CancellationToken ct)
    {
        CheckRef(req, idRequired: true);
        var kept = KeptFile(req.Name, req.Id);
        if (File.Exists(kept))
        {
            File.Delete(kept);
            LogConfirmed(log, req.Name, kept);
        }
        await PruneKeptAsync(ct);
    }

    /// <summary>Names and ids become file names here: only well-formed ones, none that leaves its folder.</summary>
    static void CheckRef(SuspendedRef req, bool idRequired)
    {
        if (Names.CapsuleNameError(req.Name) is { } bad) throw new ArgumentException(bad);
        if ((idRequired || req.Id.Length > 0) && (req.Id.Length != 32 || !req.Id.All(char.IsAsciiHexDigitLower)))
            throw new ArgumentException($"'{req.Id}' is not a suspension id");
    }

    /// <summary>
    /// Deletes kept files nobody can use any more: their capsule was removed (its locator released),
    /// resumed, or suspended again since (a resume accepts only the latest suspension's file). A
    /// capsule in the middle of a move keeps its files. Best effort: without the directory, nothing goes.
    /// </summary>
    async Task PruneKeptAsync(CancellationToken ct)
    {
        if (!Directory.Exists(KeptFolder)) return;
        // The files first, then the directory: a file listed was written before the snapshot, so
        // the snapshot already shows its capsule suspending (never an older state of it).
        var files = Directory.GetFiles(KeptFolder, "*.capsule");
        DirectoryState state;
        try { state = await directory.SnapshotAsync(ct); }
        catch (DirectoryException) { return; }
        foreach (var f in files)
        {
            var parts = Path.GetFileName(f).Split('.');
            if (parts.Length != 3 || runtime.IsMoving(parts[0])) continue;
            var rec = state.Capsules.GetValueOrDefault(parts[0]);
            var usable = rec is { State: CapsuleState.Migrating or CapsuleState.Creating }
                || rec is { State: CapsuleState.Suspended } && DetailPart(rec.Detail, "id") == parts[1];
            if (usable) continue;
            File.Delete(f);
            LogPruned(log, f);
        }
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

    [LoggerMessage(EventId = 343, Level = LogLevel.Warning,
        Message = "a suspend file did not reach its caller: {Error}; it is kept in {File} until fetched")]
    static partial void LogSendFailed(ILogger logger, string file, string error);

    [LoggerMessage(EventId = 344, Level = LogLevel.Information,
        Message = "the CLI has the file of {Name}: deleted this host's copy {File}")]
    static partial void LogConfirmed(ILogger logger, string name, string file);

    [LoggerMessage(EventId = 345, Level = LogLevel.Information,
        Message = "deleted {File}: its capsule was resumed, removed or suspended again")]
    static partial void LogPruned(ILogger logger, string file);
}
