using System.Diagnostics;
using Capsule.Checkpoint;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Linux;
using Capsule.Protos;
using Capsule.Rpc;
using Google.Protobuf;
using Grpc.Core;
using CapsuleState = Capsule.Core.CapsuleState;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent;

/// <summary>
/// Live migration (seed Fig. 5A/5B/6), driven by the capsule's current host:
/// sync (peers hold, the cut is agreed by counts) → freeze and dump (CRIU) → transfer (one
/// checksummed archive) → restore on the target → switch the directory and flush the held packets
/// to the new host. Until the switch, any failure puts the capsule back, running, where it was.
/// After it, the old host keeps nothing for the capsule: no forwarding is left behind.
/// </summary>
internal sealed partial class Migration(CapsuleRuntime runtime, DataPlaneHost dataPlane, IDirectory directory, Criu criu, ILogger<Migration> log)
{
    AgentOptions O => runtime.Options;
    public const int DefaultHoldPackets = 4096;
    /// <summary>How long the source waits for packets sent before the cut; past it TCP retransmits what was lost.</summary>
    static readonly TimeSpan CutWait = TimeSpan.FromMilliseconds(500);

    public async Task<MigrateResult> RunAsync(MigrateRequest req, Func<string, string, Task> progress, CancellationToken ct)
    {
        var c = runtime.Find(req.Name) ?? throw new KeyNotFoundException($"capsule '{req.Name}' is not on host {O.Host}");
        if (req.Target == O.Host) throw new ArgumentException($"capsule '{req.Name}' is already on {O.Host}");
        if (!CapsuleProcess.IsAlive(c.Pid)) throw new InvalidOperationException($"capsule '{req.Name}' is not running");
        if (!runtime.TryBeginMove(req.Name)) throw new InvalidOperationException($"capsule '{req.Name}' is already migrating; wait for that migration to end");
        try
        {
            return await MoveAsync(c, req, progress, ct);
        }
        finally { runtime.EndMove(req.Name); }
    }

    async Task<MigrateResult> MoveAsync(LocalCapsule c, MigrateRequest req, Func<string, string, Task> progress, CancellationToken ct)
    {
        var state = await directory.SnapshotAsync(ct);
        if (!state.Hosts.TryGetValue(req.Target, out var target)) throw new ArgumentException($"no host named '{req.Target}'");
        if (target.IsGateway) throw new ArgumentException($"{req.Target} is a gateway; capsules run on hosts");
        var self = state.Hosts[O.Host].Underlay;
        var targetAgent = new HostAgent.HostAgentClient(Channels.For(target.AgentEndpoint));
        await criu.CheckAsync(ct);
        // Refuse before anything is touched if the target cannot be reached.
        try { await targetAgent.StatsAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(3), cancellationToken: ct); }
        catch (RpcException e) { throw new InvalidOperationException($"target {req.Target} is unreachable ({e.Status.Detail}); nothing was changed"); }

        // The target builds the capsule's network while we sync and dump: off the frozen path.
        var prepared = targetAgent.PrepareAsync(new PrepareRequest { Name = c.Name, Locator = c.Locator.ToString() }, cancellationToken: ct).ResponseAsync;
        var holdPackets = req.HoldPackets > 0 ? req.HoldPackets : DefaultHoldPackets;
        var clock = new PhaseClock();
        var result = new MigrateResult { Times = new PhaseTimes() };
        var loc = c.Locator;
        var work = Path.Combine(O.StateDir, "migrations", c.Name);
        var images = Path.Combine(work, "images");
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);

        // 1. Sync: every host that has sent to the capsule holds its packets; we wait to have
        //    received everything each sent before its hold began (the cut).
        await progress("sync", req.NoHold ? "not holding (comparison run): peers keep sending" : "peers hold the capsule's packets; agreeing on the cut");
        var held = new List<(Locator Addr, HostAgent.HostAgentClient Agent)>();
        var dumped = false;
        try
        {
            result.Unaccounted = await SyncAsync(c, state, self, holdPackets, req.NoHold, held, ct, pause: !req.NoPause);
            result.Peers = held.Count;
            // From here no host routes to the capsule (holds aside), and this host delivers nothing to it.
            var moving = await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Migrating,
                state.Capsules[c.Name].Revision, $"to {req.Target}", ct: ct);
            result.Times.SyncMs = clock.Lap();

            // 2. Freeze and dump.
            await progress("dump", "freezing and checkpointing the process tree (CRIU)");
            if (req.FailAt == "dump") throw new CheckpointException("dump failed on purpose (--fail-at dump)");
            var criuClock = Stopwatch.StartNew();
            await criu.DumpAsync(c.Pid, images, ct);
            result.Times.CriuDumpMs = criuClock.ElapsedMilliseconds;
            dumped = true;
            // The tree is gone; its namespace must now neither receive (a stray packet would meet no
            // socket and be answered with a reset) nor send. Not local here any more: both are dropped.
            dataPlane.Unpin(loc);
            result.Times.DumpMs = clock.Lap();

            // 3. Transfer, and 4. restore on the target (its reply comes once the capsule runs there).
            await progress("transfer", $"sending the image to {req.Target}");
            await prepared;
            var reply = await SendAsync(targetAgent, c, images, req.FailAt, result, ct);
            result.Times.RestoreMs = reply.RestoreMs;
            result.Times.CriuRestoreMs = reply.CriuMs;
            result.Times.TransferMs = clock.Lap() - reply.RestoreMs;
            result.Pid = reply.Pid;

            // 5. Switch and flush: the directory names the new host; every holder sends what it kept there.
            await progress("flush", "switching the directory and flushing held packets to the new host");
            await directory.UpdateAsync(c.Name, req.Target, CapsuleState.Running, moving.Revision,
                ct: CancellationToken.None);
            // Switched: the capsule runs on the target and the directory says so. Nothing after this
            // line may put it back here; a failure now is reported, not rolled back.
            try
            {
                await FlushAsync(held, loc, target.Underlay, result);
                var own = await dataPlane.Engine.ReleaseAsync(loc, target.Underlay);
                dataPlane.Pin(loc, target.Underlay);
                Tally(result, own.Flushed, own.Dropped);
                await runtime.EvictAsync(c);
                if (Environment.GetEnvironmentVariable("CAPSULE_KEEP_IMAGES") is null) Directory.Delete(work, recursive: true);
            }
            catch (Exception e)
            {
                log.LogWarning("{Name} moved to {Target}, but tidying up here failed: {Error}", c.Name, req.Target, e.Message);
                result.Error = $"moved, but removing what was left on {O.Host} failed: {Describe(e)}";
            }
            result.Times.FlushMs = clock.Lap();
            result.Times.TotalMs = clock.Total;
            result.Ok = true;
            result.Host = req.Target;
            log.LogInformation("migrated {Name} to {Target} in {Total} ms (image {Bytes} bytes, {Held} held)", c.Name, req.Target, result.Times.TotalMs, result.ImageBytes, result.Held);
            return result;
        }
        catch (Exception e)
        {
            log.LogWarning("migration of {Name} failed: {Error}; resuming it here", c.Name, e.Message);
            await progress("rollback", $"failed: {Describe(e)}; resuming the capsule on {O.Host}");
            result.Ok = false;
            result.Error = Describe(e);
            // Whatever the target built ahead goes (it never removes a capsule that runs there).
            await prepared.ContinueWith(_ => { }, TaskScheduler.Default);
            try { await targetAgent.AbortAsync(new NameRequest { Name = c.Name }, deadline: DateTime.UtcNow.AddSeconds(10)); }
            catch (RpcException a) { log.LogWarning("could not tell {Target} to drop what it prepared: {Error}", req.Target, a.Status.Detail); }
            try
            {
                await RollBackAsync(c, dumped, images, held, self, result);
                result.ResumedOnSource = true;
            }
            catch (Exception r)
            {
                // Keep the images: they are what is left of the capsule.
                log.LogError("could not resume {Name} on {Host}: {Error}; its images stay in {Work}", c.Name, O.Host, r.Message, work);
                result.Error += $"; resuming it on {O.Host} failed too ({Describe(r)}); its checkpoint is kept in {work}";
                result.Host = O.Host;
                result.Times.TotalMs = clock.Total;
                return result;
            }
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            result.Host = O.Host;
            result.Times.TotalMs = clock.Total;
            return result;
        }
    }

    /// <summary>
    /// The cut (seed Fig. 5B): this host and every host that has sent to the capsule hold its
    /// packets; each peer says how many it had sent here before holding, and we wait (bounded) to
    /// have received them all. Returns how many were still missing when the wait ended. Peers that
    /// hold are added to <paramref name="held"/> as they answer, so a failure part-way releases them.
    /// </summary>
    async Task<long> SyncAsync(LocalCapsule c, DirectoryState state, Locator self, int holdPackets, bool noHold,
        List<(Locator Addr, HostAgent.HostAgentClient Agent)> held, CancellationToken ct, bool pause = true)
    {
        var loc = c.Locator;
        // Still local here until the dump is done, whatever the directory says meanwhile: the
        // capsule's own packets (its kernel keeps sending while it runs) go out as before.
        dataPlane.Pin(loc, self);
        if (noHold) return 0;
        // Local peers reach the capsule through its veth; with that route gone they reach the TUN, and our own hold.
        await CapsuleNetwork.DetachAsync(loc);
        await dataPlane.Engine.HoldAsync(loc, self, holdPackets, c.UdpDrop);
        var peers = dataPlane.Engine.SendersTo(loc).Select(p => p.Host).Where(h => h != self).Distinct()
            .Select(p => (Addr: p, Host: state.Hosts.Values.FirstOrDefault(h => h.Underlay == p)))
            .Where(p => p.Host is not null)
            .Select(p => (p.Addr, Agent: new HostAgent.HostAgentClient(Channels.For(p.Host!.AgentEndpoint)))).ToList();
        var cuts = await Task.WhenAll(peers.Select(async p =>
        {
            var cut = await p.Agent.HoldAsync(new HoldRequest { Locator = loc.ToString(), Via = self.ToString(), Capacity = holdPackets, UdpDrop = c.UdpDrop, NoPause = !pause },
                deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: ct);
            lock (held) held.Add(p);
            return (p.Addr, cut.SentPackets);
        }));
        var sw = Stopwatch.StartNew();
        long Missing() => cuts.Sum(x => Math.Max(0, x.SentPackets - dataPlane.Engine.ReceivedFromHost(x.Addr, loc)));
        while (Missing() > 0 && sw.Elapsed < CutWait) await Task.Delay(1, ct);
        return Missing();
    }

    static string Describe(Exception e) => e is RpcException r ? r.Status.Detail : e.Message;

    /// <summary>Streams the image (CRIU's files and the capsule's own folder, as tar) to the target, then its checksum.</summary>
    async Task<ReceiveReply> SendAsync(HostAgent.HostAgentClient target, LocalCapsule c, string images, string failAt, MigrateResult result, CancellationToken ct)
    {
        using var call = target.Receive(cancellationToken: ct);
        var first = new ImageChunk { Name = c.Name, Locator = c.Locator.ToString(), FailAt = failAt ?? "", UdpDrop = c.UdpDrop };
        first.Command.AddRange(c.Command);
        await call.RequestStream.WriteAsync(first, ct);
        var chunks = 0;
        await using var stream = new ChunkStream(async (data, token) =>
        {
            var bytes = ByteString.CopyFrom(data.Span);
            // A corrupt transfer, on purpose: one byte of the first chunk flipped after it was hashed.
            if (chunks++ == 0 && failAt == "transfer") bytes = ByteString.CopyFrom([(byte)(data.Span[0] ^ 0xFF), .. data.Span[1..]]);
            await call.RequestStream.WriteAsync(new ImageChunk { Data = bytes }, token);
        });
        await ImageArchive.WriteAsync(stream, images, c.Dir, ct);
        var sha = await stream.FinishAsync(ct);
        result.ImageBytes = stream.Length;
        await call.RequestStream.WriteAsync(new ImageChunk { Sha256 = sha }, ct);
        await call.RequestStream.CompleteAsync();
        return await call;
    }

    /// <summary>Adds one holder's flush to the result: what it held is what it flushed plus what it dropped.</summary>
    static void Tally(MigrateResult result, long flushed, long dropped)
    {
        result.Held += flushed + dropped;
        result.Flushed += flushed;
        result.Dropped += dropped;
    }

    static async Task FlushAsync(List<(Locator Addr, HostAgent.HostAgentClient Agent)> held, Locator loc, Locator to, MigrateResult result)
    {
        var replies = await Task.WhenAll(held.Select(async p =>
        {
            try { return await p.Agent.ReleaseAsync(new ReleaseRequest { Locator = loc.ToString(), ToUnderlay = to.ToString() }, deadline: DateTime.UtcNow.AddSeconds(5)); }
            catch (RpcException) { return new ReleaseReply(); } // that peer's agent is gone: nothing of it to flush
        }));
        foreach (var r in replies) Tally(result, r.Flushed, r.Dropped);
    }

    /// <summary>Puts the capsule back as it was: running here, reachable here, held packets delivered here.</summary>
    async Task RollBackAsync(LocalCapsule c, bool dumped, string images, List<(Locator Addr, HostAgent.HostAgentClient Agent)> held,
        Locator self, MigrateResult result)
    {
        var loc = c.Locator;
        if (dumped)
        {
            // CRIU ended the tree after the dump; bring it back from the same images, into the same namespace.
            var pid = await criu.RestoreAsync(images, c.Netns, CancellationToken.None);
            var back = c with { Pid = pid };
            runtime.Adopt(back);
            result.Pid = pid;
        }
        else result.Pid = c.Pid;
        await CapsuleNetwork.AttachAsync(loc);
        dataPlane.Pin(loc, self);
        try { await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Running,
            (await directory.ReadAsync(c.Name)).Revision, ct: CancellationToken.None); }
        catch (DirectoryException e) { log.LogWarning("could not record {Name} as running again: {Error}", c.Name, e.Message); }
        await FlushAsync(held, loc, self, result);
        var own = await dataPlane.Engine.ReleaseAsync(loc, self);
        Tally(result, own.Flushed, own.Dropped);
    }

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, Locator> _prepared = new();

    /// <summary>Target side, ahead of the freeze: the capsule's network namespace, veth and routes, not yet routed to.</summary>
    public async Task PrepareAsync(string name, Locator loc, CancellationToken ct)
    {
        if (Names.CapsuleNameError(name) is { } bad) throw new ArgumentException(bad);
        if (runtime.Find(name) is not null) throw new InvalidOperationException($"capsule '{name}' already runs on {O.Host}");
        await CapsuleNetwork.BuildAsync(O.CapsuleNetns(name), loc, O.InnerMtu);
        _prepared[name] = loc;
    }

    /// <summary>Target side, after a failed migration: removes what <see cref="PrepareAsync"/> built.</summary>
    public async Task AbortAsync(string name)
    {
        if (runtime.Find(name) is not null) return; // restored after all: it is the source's to sort out, not ours to kill
        if (_prepared.TryRemove(name, out var loc)) await CapsuleNetwork.DestroyAsync(O.CapsuleNetns(name), loc);
    }

    /// <summary>Target side: receive the image, check it, rebuild the capsule's network, restore its processes.</summary>
    public async Task<ReceiveReply> ReceiveAsync(IAsyncStreamReader<ImageChunk> stream, CancellationToken ct)
    {
        if (!await stream.MoveNext(ct)) throw new ArgumentException("empty image stream");
        var head = stream.Current;
        if (Names.CapsuleNameError(head.Name) is { } bad) throw new ArgumentException(bad);
        var loc = Locator.Parse(head.Locator);
        if (runtime.Find(head.Name) is not null) throw new InvalidOperationException($"capsule '{head.Name}' already runs on {O.Host}");
        var work = Path.Combine(O.StateDir, "migrations", head.Name + ".in");
        var archive = Path.Combine(work, "image.tar");
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        Directory.CreateDirectory(work);
        try
        {
            string? sha = null;
            long bytes = 0;
            using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
            await using (var fs = File.Create(archive))
            {
                while (await stream.MoveNext(ct))
                {
                    var chunk = stream.Current;
                    if (chunk.Sha256.Length > 0) { sha = chunk.Sha256; break; }
                    hash.AppendData(chunk.Data.Span);
                    await fs.WriteAsync(chunk.Data.Memory, ct);
                    bytes += chunk.Data.Length;
                }
            }
            if (sha is null) throw new InvalidDataException("the image stream ended without its checksum (transfer cut short)");
            var got = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (got != sha) throw new InvalidDataException($"corrupt transfer: image checksum {got[..12]}… does not match the sender's {sha[..12]}…");
            var (pid, ms, criuMs) = await RestoreHereAsync(head.Name, loc, [.. head.Command], head.UdpDrop, archive, work, head.FailAt, ct);
            return new ReceiveReply { Pid = pid, RestoreMs = ms, Bytes = bytes, CriuMs = criuMs };
        }
        finally
        {
            if (Directory.Exists(work) && Environment.GetEnvironmentVariable("CAPSULE_KEEP_IMAGES") is null) Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>
    /// Unpacks a capsule's archive here, rebuilds its network with the same locator and restores
    /// its processes. On failure everything it made is removed again. Returns (pid, restore ms).
    /// </summary>
    async Task<(int Pid, long Ms, long CriuMs)> RestoreHereAsync(string name, Locator loc, string[] command, bool udpDrop, string archive, string work, string failAt, CancellationToken ct)
    {
        var images = Path.Combine(work, "images");
        var dir = O.CapsuleDir(name);
        var netns = O.CapsuleNetns(name);
        var built = _prepared.TryRemove(name, out _);
        try
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            await ImageArchive.ExtractAsync(archive, images, dir, ct);
            var sw = Stopwatch.StartNew();
            if (failAt == "restore") throw new CheckpointException("restore failed on purpose (--fail-at restore)");
            if (!built) await CapsuleNetwork.BuildAsync(netns, loc, O.InnerMtu);
            built = true;
            var criuClock = Stopwatch.StartNew();
            var pid = await criu.RestoreAsync(images, netns, ct);
            var criuMs = criuClock.ElapsedMilliseconds;
            // Only now, with the sockets back, does anything reach the capsule here.
            await CapsuleNetwork.AttachAsync(loc);
            var self = dataPlane.State!.Hosts[O.Host].Underlay;
            dataPlane.Pin(loc, self); // local here before anyone flushes to us
            runtime.Adopt(new LocalCapsule(name, loc, netns, dir, pid, command, udpDrop));
            log.LogInformation("restored capsule {Name} ({Locator}) as pid {Pid}", name, loc, pid);
            return (pid, sw.ElapsedMilliseconds, criuMs);
        }
        catch
        {
            dataPlane.Unpin(loc);
            if (built) await CapsuleNetwork.DestroyAsync(netns, loc);
            if (Directory.Exists(dir) && runtime.Find(name) is null) Directory.Delete(dir, recursive: true);
            throw;
        }
    }
}
