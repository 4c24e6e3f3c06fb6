using System.Collections.Concurrent;
using System.Diagnostics;
using Capsule.Agent.Checkpoint;
using Capsule.Agent.Faults;
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
/// The receiving side of a move: builds the capsule's network ahead of the freeze, takes the
/// image (checksummed on the way), restores the processes and only then routes to them. It never
/// decides that the move happened: the source does, by switching the directory.
/// </summary>
internal sealed partial class MigrationTarget(CapsuleRuntime runtime, DataPlaneHost dataPlane, IDirectory directory,
    Criu criu, FaultInjector faults, ILogger<MigrationTarget> log)
{
    AgentOptions O => runtime.Options;
    readonly ConcurrentDictionary<string, Locator> _prepared = new();

    /// <summary>Ahead of the freeze: the capsule's network namespace, veth and routes, not yet routed to.</summary>
    /// <param name="ownUserNs">
    /// Nothing to build: its network namespace comes with its image (<see cref="OwnRoot"/>).
    /// </param>
    public async Task PrepareAsync(string name, Locator loc, bool postCopy, bool ownUserNs, CancellationToken ct)
    {
        if (Names.CapsuleNameError(name) is { } bad) throw new ArgumentException(bad);
        if (runtime.Find(name) is not null)
            throw new InvalidOperationException($"capsule '{name}' already runs on {O.Host}");
        await criu.CheckAsync(ct);
        if (postCopy && await criu.PostCopyProblemAsync(ct) is { } problem)
            throw new InvalidOperationException($"{O.Host} cannot take a post-copy move: {problem}");
        if (ownUserNs)
        {
            Launcher.Check();
            return;
        }
        await CapsuleNetwork.BuildAsync(O.CapsuleNetns(name), loc, O.InnerMtu);
        await Criu.LockForRestoreAsync(O.CapsuleNetns(name));
        _prepared[name] = loc;
    }

    /// <summary>A namespace built and locked for a restore by someone else (a resume).</summary>
    public void MarkPrepared(string name, Locator loc) => _prepared[name] = loc;

    /// <summary>
    /// After a failed move: removes what <see cref="PrepareAsync"/> built, and a capsule this host
    /// restored that the directory does not place here (the source resumed its own copy).
    /// </summary>
    public async Task AbortAsync(string name, CancellationToken ct)
    {
        DropStaged(name);
        DropPageStream(name);
        if (runtime.Find(name) is { } c)
        {
            // The directory is the judge: if it places the capsule here, the move did happen.
            var rec = (await directory.SnapshotAsync(ct)).Capsules.GetValueOrDefault(name);
            if (rec is { State: CapsuleState.Running } && rec.Host == O.Host) return;
            LogDroppingRestored(log, name);
            await runtime.EvictAsync(c);
            return;
        }
        if (_prepared.TryRemove(name, out var loc)) await CapsuleNetwork.DestroyAsync(O.CapsuleNetns(name), loc);
    }

    /// <summary>Receives the image, checks it, restores the processes and routes to them.</summary>
    /// <param name="authorize">Checks, from the first message, that its sender may send this capsule here.</param>
    public async Task<ReceiveReply> ReceiveAsync(IAsyncStreamReader<ImageChunk> stream,
        Func<ImageChunk, Task> authorize, CancellationToken ct)
    {
        if (!await stream.MoveNext(ct)) throw new ArgumentException("empty image stream");
        var head = stream.Current;
        if (Names.CapsuleNameError(head.Name) is { } bad) throw new ArgumentException(bad);
        await authorize(head);
        var loc = Locator.Parse(head.Locator);
        if (runtime.Find(head.Name) is not null)
            throw new InvalidOperationException($"capsule '{head.Name}' already runs on {O.Host}");
        OwnRoot.From(head.RootFs)?.CheckPresent(head.Name, O.Host);
        var work = IncomingFolder(head.Name);
        // Its memory, when it went ahead, is in this folder already.
        using var pages = TakePageStream(head);
        if (pages is null)
        {
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            PrivateFiles.CreateFolder(work);
        }
        var first = true;
        async Task OnChunk(long _)
        {
            if (!first) return;
            first = false;
            await faults.HitAsync(FaultPoints.TargetTransfer);
        }
        // Unpacked as it arrives, hashed on the way; restored from only once the sender's checksum matched.
        await using var image = new ChunkReader<ImageChunk>(stream, c => c.Data, c => c.Sha256, onChunk: OnChunk);
        async Task Unpack(string images, string dir)
        {
            var budget = pages?.Budget ?? ImageBudget.For(O.StateDir, O.MaxImageBytes);
            await ImageArchive.ExtractCheckedAsync(image, "the image", image.VerifyAsync, budget, images, dir, ct,
                OwnRoot.From(head.RootFs));
            if (pages is not null) await CheckPagesAsync(pages, head, ct);
            TakeStaged(head.Name, head.Staged, dir);
            await faults.HitAsync(FaultPoints.TargetRestore);
        }
        Restored? r = null;
        try
        {
            r = await RestoreHereAsync(head.Name, loc, [.. head.Command], head.UdpDrop, Unpack, work, ct,
                head.PostCopy, OwnRoot.From(head.RootFs), CapsuleLimits.From(head.Limits));
            await faults.HitAsync(FaultPoints.TargetAfterRestore);
            return new ReceiveReply
            {
                Pid = r.Value.Pid, RestoreMs = r.Value.Ms, Bytes = image.Received, CriuMs = r.Value.CriuMs,
                Sockets = { CapsuleSockets.Read(r.Value.Pid) },
            };
        }
        finally
        {
            // A post-copy tail still reads the images' folder (its log, the restored pid): it tidies up itself.
            var tailRuns = head.PostCopy && r is not null;
            DropStaged(head.Name);
            var keep = Environment.GetEnvironmentVariable("CAPSULE_KEEP_IMAGES") is not null;
            if (!tailRuns && !keep && Directory.Exists(work)) Directory.Delete(work, recursive: true);
        }
    }

    internal readonly record struct Restored(int Pid, long Ms, long CriuMs);

    /// <summary>
    /// Unpacks a capsule's image here (<paramref name="unpack"/>: into the images folder and the
    /// capsule's folder, checked), rebuilds its network with the same locator and restores its
    /// processes. On failure everything it made is removed again.
    /// </summary>
    /// <param name="postCopy">The images have no memory: a lazy-pages daemon here fills it in from the source.</param>
    /// <param name="root">Its own user namespace and root file system: mounted here, and restored into.</param>
    /// <param name="limits">Its cgroup limits: CRIU makes its cgroups again here, under this host's name.</param>
    public async Task<Restored> RestoreHereAsync(string name, Locator loc, string[] command, bool udpDrop,
        Func<string, string, Task> unpack, string work, CancellationToken ct, bool postCopy = false,
        OwnRoot? root = null, CapsuleLimits? limits = null)
    {
        var images = Path.Combine(work, "images");
        var dir = O.CapsuleDir(name);
        var netns = O.CapsuleNetns(name);
        var mounts = RootMounts.Of(O.StateDir, name);
        var built = _prepared.TryRemove(name, out _);
        (Process Daemon, PostCopyTail Tail)? lazy = null;
        var pid = 0;
        try
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
            await unpack(images, dir);
            var sw = Stopwatch.StartNew();
            if (!built && root is null)
            {
                await CapsuleNetwork.BuildAsync(netns, loc, O.InnerMtu);
                await Criu.LockForRestoreAsync(netns);
            }
            built = true;
            if (root is not null) await Launcher.MountAsync(root, OwnRoot.Upper(dir), mounts, ct);
            var criuClock = Stopwatch.StartNew();
            if (postCopy) lazy = await StartLazyPagesAsync(name, images, ct);
            pid = root is null
                ? await criu.RestoreAsync(images, netns, postCopy, ct)
                : await criu.RestoreOwnRootAsync(images, root, mounts.Merged,
                    await CapsuleNetwork.PairForRestoreAsync(loc, O.InnerMtu), limits?.RestoreArgs(netns) ?? [],
                    postCopy, ct);
            var criuMs = criuClock.ElapsedMilliseconds;
            if (lazy is { } l)
            {
                // Moving until every page is here: no other move may take it, and its end is the tail's to record.
                runtime.TryBeginMove(name);
                WatchTail(name, pid, l.Daemon, l.Tail, images, work);
                lazy = null;
            }
            if (root is not null) await CapsuleNetwork.AdoptAsync(netns, loc, pid);
            // Only now, with the sockets back, does anything reach the capsule here. If this host
            // holds packets for it (its capsules sent to it), their direct route waits for the flush.
            await CapsuleNetwork.AttachDeliveryAsync(loc);
            if (await dataPlane.Engine.IsHoldingAsync(loc)) _ = AttachLocalAfterHoldAsync(loc);
            else await CapsuleNetwork.AttachLocalAsync(loc);
            var self = dataPlane.State!.Hosts[O.Host].Underlay;
            dataPlane.Pin(loc, self); // local here before anyone flushes to us
            runtime.Adopt(new LocalCapsule(name, loc, netns, dir, pid, command, udpDrop, root, limits));
            LogRestored(log, name, loc, pid);
            return new Restored(pid, sw.ElapsedMilliseconds, criuMs);
        }
        catch
        {
            if (lazy is { } l)
            {
                l.Daemon.Kill(entireProcessTree: true);
                l.Daemon.Dispose();
            }
            dataPlane.Unpin(loc);
            // A tree in its own network namespace is not found by that namespace's name until adopted.
            if (runtime.Find(name) is null) await CapsuleProcess.KillAsync(pid);
            if (built) await CapsuleNetwork.DestroyAsync(netns, loc);
            if (root is not null && runtime.Find(name) is null) await Launcher.UnmountAsync(mounts);
            if (limits is not null && runtime.Find(name) is null) await limits.RemoveAsync(netns);
            if (Directory.Exists(dir) && runtime.Find(name) is null) Directory.Delete(dir, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// This host held its own capsules' packets for the one that just arrived: its direct route
    /// waits until they are all delivered (released and drained, or the lease ended), so no new
    /// packet overtakes a held one. Meanwhile what they send goes through the TUN (Engine.DeliverLocal).
    /// </summary>
    async Task AttachLocalAfterHoldAsync(Locator loc)
    {
        try
        {
            await dataPlane.Engine.WhenNotHoldingAsync(loc);
            if (runtime.All.Any(c => c.Locator == loc)) await CapsuleNetwork.AttachLocalAsync(loc);
        }
        catch (Exception e)
        {
            LogAttachLocalFailed(log, loc, e.Message);
        }
    }

    [LoggerMessage(EventId = 322, Level = LogLevel.Warning,
        Message =
            "could not give {Locator} its direct route after the hold: {Error}; its peers here go through the TUN")]
    static partial void LogAttachLocalFailed(ILogger logger, Locator locator, string error);

    [LoggerMessage(EventId = 320, Level = LogLevel.Information,
        Message = "restored capsule {Name} ({Locator}) as pid {Pid}")]
    static partial void LogRestored(ILogger logger, string name, Locator locator, int pid);

    [LoggerMessage(EventId = 321, Level = LogLevel.Warning,
        Message = "dropping capsule {Name} restored here: its move did not complete and it runs on its old host")]
    static partial void LogDroppingRestored(ILogger logger, string name);
}
