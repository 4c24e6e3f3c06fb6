using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

/// <summary>
/// Puts a capsule whose move failed back as it was: running here, reachable here, the directory
/// saying so, and what every holder kept delivered here. Used by a failed migration, a failed
/// suspend and by recovery after a crash.
/// </summary>
internal sealed partial class SourceRollback(CapsuleRuntime runtime, DataPlaneHost dataPlane, IDirectory directory,
    Criu criu, HoldCoordinator holds, ILogger<SourceRollback> log)
{
    AgentOptions O => runtime.Options;

    /// <summary>
    /// A file in a post-copy move's images: they have no memory pages (CRIU's lazy dump serves those).
    /// </summary>
    public const string PostCopyMark = "post-copy";

    public readonly record struct Outcome(int Pid, HoldTally Tally);

    public async Task<Outcome> RunAsync(LocalCapsule c, FrozenTree? frozen, string images, HoldSet? holdSet,
        IReadOnlyCollection<Locator> holders, HostAgent.HostAgentClient? target)
    {
        // The target first drops anything it restored: the directory does not place the capsule there.
        if (target is not null) await AbortTargetAsync(target, c.Name);
        var pid = await ResumeTreeAsync(c, frozen, images);
        await CapsuleNetwork.AttachAsync(c.Locator);
        var state = await directory.SnapshotAsync();
        var self = state.Hosts[O.Host].Underlay;
        dataPlane.Pin(c.Locator, self);
        if (state.Capsules.TryGetValue(c.Name, out var rec)
            && (rec.Host != O.Host || rec.State != CapsuleState.Running))
            await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Running, rec.Revision, null);
        var tally = holdSet is not null
            ? await holdSet.ReleaseAsync(self)
            : await holds.ReleaseAsync(c.Locator, holders, self, state);
        LogResumed(log, c.Name, pid);
        return new Outcome(pid, tally);
    }

    /// <summary>
    /// The tree runs again: thawed by CRIU if it is still frozen, else restored from the images kept here.
    /// </summary>
    async Task<int> ResumeTreeAsync(LocalCapsule c, FrozenTree? frozen, string images)
    {
        if (frozen is not null)
        {
            await frozen.RollBackAsync();
            if (CapsuleProcess.IsAlive(frozen.Pid)) return frozen.Pid;
        }
        else if (CapsuleProcess.IsAlive(c.Pid))
        {
            return c.Pid; // never frozen
        }
        // Gone (a reboot, or the dump gave up waiting and then the tree ended): the images are what is left.
        if (File.Exists(Path.Combine(images, PostCopyMark)))
            throw new CheckpointException("its tree is gone, and the images of a post-copy move hold no memory " +
                "to restore it from");
        // Its memory went to the target as the dump wrote it: the copy kept here makes the images whole again.
        if (File.Exists(Path.Combine(images, Criu.PageStreamFile))) await criu.ReplayPagesAsync(images, default);
        var pid = c.Root is null ? await RestoreAsync(c, images) : await RestoreOwnRootAsync(c, c.Root, images);
        runtime.Adopt(c with { Pid = pid });
        return pid;
    }

    async Task<int> RestoreAsync(LocalCapsule c, string images)
    {
        await Criu.LockForRestoreAsync(c.Netns);
        return await criu.RestoreAsync(images, c.Netns, lazy: false, CancellationToken.None);
    }

    /// <summary>
    /// Its network namespace comes back from the images (<see cref="Criu.RestoreOwnRootAsync"/>): the old one
    /// goes first, with its veth, and its root is mounted again if it is not mounted still.
    /// </summary>
    async Task<int> RestoreOwnRootAsync(LocalCapsule c, OwnRoot root, string images)
    {
        await CapsuleNetwork.DestroyAsync(c.Netns, c.Locator);
        var mounts = RootMounts.Of(O.StateDir, c.Name);
        await Launcher.MountAsync(root, OwnRoot.Upper(c.Dir), mounts, CancellationToken.None);
        var eth0 = await CapsuleNetwork.PairForRestoreAsync(c.Locator, O.InnerMtu);
        var pid = await criu.RestoreOwnRootAsync(images, root, mounts.Merged, eth0,
            c.Limits?.RestoreArgs(c.Netns) ?? [], lazy: false, CancellationToken.None);
        await CapsuleNetwork.AdoptAsync(c.Netns, c.Locator, pid);
        return pid;
    }

    public async Task AbortTargetAsync(HostAgent.HostAgentClient target, string name)
    {
        try
        {
            await target.AbortAsync(new NameRequest { Name = name }, deadline: DateTime.UtcNow.AddSeconds(10));
        }
        catch (RpcException e)
        {
            // If it restored the capsule and then died, its next start drops it (the directory does not
            // place it there).
            LogAbortFailed(log, name, e.Status.Detail);
        }
    }

    [LoggerMessage(EventId = 330, Level = LogLevel.Information, Message = "capsule {Name} runs here again (pid {Pid})")]
    static partial void LogResumed(ILogger logger, string name, int pid);

    [LoggerMessage(EventId = 331, Level = LogLevel.Warning,
        Message = "could not tell the target to drop {Name}: {Error}")]
    static partial void LogAbortFailed(ILogger logger, string name, string error);
}
