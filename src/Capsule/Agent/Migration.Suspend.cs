using System.Diagnostics;
using Capsule.Checkpoint;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Linux;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent;

/// <summary>
/// Suspend to a file and resume on any host (the seed's "suspend them on disk for later revival
/// on the same or a different machine"): the migration's sync and dump, with a file in the middle
/// instead of a target. While the capsule sleeps its locator stays reserved in the directory and
/// its peers keep holding its packets (bounded, then dropped and counted); resume flushes them.
/// </summary>
internal sealed partial class Migration
{
    /// <summary>The directory's note on a suspended capsule: where its file is and which suspension it is.</summary>
    static string SuspendDetail(string file, string id) => $"file={file} id={id}";

    public async Task<SuspendResult> SuspendAsync(SuspendRequest req, CancellationToken ct)
    {
        var c = runtime.Find(req.Name) ?? throw new KeyNotFoundException($"capsule '{req.Name}' is not on host {O.Host}");
        if (!Path.IsPathFullyQualified(req.File)) throw new ArgumentException($"the file must be an absolute path, not '{req.File}'");
        if (File.Exists(req.File)) throw new ArgumentException($"{req.File} exists already; choose another file (nothing is overwritten)");
        if (!Directory.Exists(Path.GetDirectoryName(req.File))) throw new ArgumentException($"folder {Path.GetDirectoryName(req.File)} does not exist");
        if (!CapsuleProcess.IsAlive(c.Pid)) throw new InvalidOperationException($"capsule '{req.Name}' is not running");
        await criu.CheckAsync(ct);
        if (!runtime.TryBeginMove(req.Name)) throw new InvalidOperationException($"capsule '{req.Name}' is already migrating or being suspended");
        try
        {
            var state = await directory.SnapshotAsync(ct);
            var self = state.Hosts[O.Host].Underlay;
            var clock = new PhaseClock();
            var times = new PhaseTimes();
            var work = Path.Combine(O.StateDir, "migrations", c.Name);
            var images = Path.Combine(work, "images");
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            var held = new List<(Locator Addr, HostAgent.HostAgentClient Agent)>();
            var dumped = false;
            try
            {
                await SyncAsync(c, state, self, req.HoldPackets > 0 ? req.HoldPackets : DefaultHoldPackets, noHold: false, held, ct);
                var suspending = await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Migrating,
                    state.Capsules[c.Name].Revision, "suspending", ct: ct);
                times.SyncMs = clock.Lap();
                var procs = Processes(c.Pid);
                var conns = await ConnectionsAsync(c.Netns);
                await criu.DumpAsync(c.Pid, images, ct);
                dumped = true;
                dataPlane.Unpin(c.Locator);
                times.DumpMs = clock.Lap();

                var payload = Path.Combine(work, "payload.tar");
                await ImageArchive.WriteAsync(payload, images, c.Dir, ct);
                var id = Guid.NewGuid().ToString("n");
                var meta = new SuspendMeta(SuspendFile.Version, id, c.Name, c.Locator.ToString(), c.Command, O.Host, DateTime.UtcNow, procs, conns, 0) { UdpDrop = c.UdpDrop };
                await SuspendFile.WriteAsync(req.File, meta, payload, ct);
                // The file is whole on disk before the directory says so: a crash before this line
                // leaves the capsule recorded as migrating here, never as suspended to a half file.
                await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Suspended, suspending.Revision,
                    SuspendDetail(req.File, id), ct: CancellationToken.None);
                times.TransferMs = clock.Lap();
                // Gone from this host; the holds (ours for local peers, the peers' own) stay until resume.
                await runtime.EvictAsync(c);
                Directory.Delete(work, recursive: true);
                times.TotalMs = clock.Total;
                log.LogInformation("suspended {Name} to {File}", c.Name, req.File);
                return new SuspendResult
                {
                    File = req.File, Bytes = new FileInfo(req.File).Length, Times = times, Peers = held.Count,
                    Processes = procs.Count, Connections = conns.Count,
                };
            }
            catch (Exception e)
            {
                log.LogWarning("suspend of {Name} failed: {Error}; resuming it here", c.Name, e.Message);
                File.Delete(req.File + ".partial");
                var result = new MigrateResult { Times = new PhaseTimes() };
                try { await RollBackAsync(c, dumped, images, held, self, result); }
                catch (Exception r)
                {
                    throw new InvalidOperationException($"suspend failed ({Describe(e)}) and resuming it on {O.Host} failed too ({Describe(r)}); its checkpoint is kept in {work}");
                }
                if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
                throw new InvalidOperationException($"suspend failed: {Describe(e)}; capsule {c.Name} was resumed on {O.Host}");
            }
        }
        finally { runtime.EndMove(req.Name); }
    }

    public async Task<ResumeResult> ResumeAsync(ResumeRequest req, CancellationToken ct)
    {
        var clock = new PhaseClock();
        SuspendMeta meta;
        try { meta = await SuspendFile.ReadMetaAsync(req.File, verify: true, ct); }
        catch (FileNotFoundException e) { throw new ArgumentException(e.Message); }
        catch (InvalidDataException e) { throw new ArgumentException(e.Message); }
        var state = await directory.SnapshotAsync(ct);
        if (!state.Capsules.TryGetValue(meta.Name, out var rec) || rec.Locator.ToString() != meta.Locator)
            throw new InvalidOperationException($"capsule '{meta.Name}' ({meta.Locator}) is no longer in the directory: its locator was released, so this file cannot be resumed");
        if (rec.State != CapsuleState.Suspended)
            throw new InvalidOperationException($"capsule '{meta.Name}' is {rec.State.ToString().ToLowerInvariant()} on {rec.Host}, not suspended: this file was resumed already");
        if (rec.Detail is null || !rec.Detail.EndsWith("id=" + meta.Id, StringComparison.Ordinal))
            throw new InvalidOperationException($"capsule '{meta.Name}' was suspended again since this file was made; resume its latest file ({rec.Detail})");
        if (runtime.Find(meta.Name) is not null) throw new InvalidOperationException($"capsule '{meta.Name}' already runs on {O.Host}");
        if (O.Serves.Length > 0) throw new ArgumentException($"{O.Host} is a gateway; capsules run on hosts");
        await criu.CheckAsync(ct);
        if (!runtime.TryBeginMove(meta.Name)) throw new InvalidOperationException($"capsule '{meta.Name}' is being resumed already");
        var work = Path.Combine(O.StateDir, "migrations", meta.Name + ".resume");
        try
        {
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            Directory.CreateDirectory(work);
            var archive = Path.Combine(work, "payload.tar");
            await SuspendFile.ExtractPayloadAsync(req.File, archive, ct);
            var loc = Locator.Parse(meta.Locator);
            var (pid, restoreMs, _) = await RestoreHereAsync(meta.Name, loc, meta.Command, meta.UdpDrop, archive, work, "", ct);
            try
            {
                // Only one resume of a file wins: the revision must still be the suspended one.
                await directory.UpdateAsync(meta.Name, O.Host, CapsuleState.Running, expectRevision: rec.Revision, ct: CancellationToken.None);
            }
            catch (DirectoryException)
            {
                var c = runtime.Find(meta.Name);
                if (c is not null) await runtime.EvictAsync(c);
                throw;
            }
            // Every host may be holding the capsule's packets (its peers and its old host): all flush here.
            var self = state.Hosts[O.Host].Underlay;
            var flushed = 0L;
            var dropped = 0L;
            foreach (var r in await Task.WhenAll(state.Hosts.Values.Select(async h =>
                     {
                         try
                         {
                             return await new HostAgent.HostAgentClient(Channels.For(h.AgentEndpoint)).ReleaseAsync(
                                 new ReleaseRequest { Locator = meta.Locator, ToUnderlay = self.ToString() }, deadline: DateTime.UtcNow.AddSeconds(5));
                         }
                         catch (RpcException) { return new ReleaseReply(); }
                     })))
            {
                flushed += r.Flushed;
                dropped += r.Dropped;
            }
            log.LogInformation("resumed {Name} from {File} as pid {Pid}", meta.Name, req.File, pid);
            return new ResumeResult
            {
                Name = meta.Name, Locator = meta.Locator, Host = O.Host, Pid = pid, RestoreMs = restoreMs, TotalMs = clock.Total,
                Flushed = flushed, Dropped = dropped,
            };
        }
        finally
        {
            runtime.EndMove(meta.Name);
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
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
                if (!int.TryParse(Path.GetFileName(d), out _) || new FileInfo(Path.Combine(d, "ns/pid")).LinkTarget != ns) continue;
                var inner = File.ReadLines(Path.Combine(d, "status")).First(l => l.StartsWith("NSpid:")).Split('\t', ' ', StringSplitOptions.RemoveEmptyEntries).Last();
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
        return r.Ok ? [.. r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => string.Join(' ', l.Split(' ', StringSplitOptions.RemoveEmptyEntries)))] : [];
    }
}
