using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// CRIU for a capsule with its own user namespace (<see cref="OwnRoot"/>). Its network namespace
/// cannot be handed to CRIU from outside as the others' is: CRIU makes the user namespace anew at the
/// restore, and a network namespace made beforehand belongs to another one ("Can't setns 13/net:
/// Operation not permitted"). So the namespace goes into the image (links, addresses, routes) and
/// CRIU restores it; only its eth0 is external: a veth end the agent made, moved in by CRIU.
/// </summary>
public sealed partial class Criu
{
    /// <summary>
    /// Its /dev's binds of the host's null, zero, tty and the like are external mounts: the restore
    /// binds the target's own (--ext-mount-map auto). Without it: "mnt: ./dev/tty doesn't have a proper root mount".
    /// </summary>
    static readonly string[] OwnRootDumpArgs = ["--external", "mnt[]"];

    /// <summary>
    /// Restores such a tree onto <paramref name="root"/> (its root file system, mounted by the
    /// launcher on this host) and returns its host pid. The restored network namespace is locked by
    /// the hook until CRIU unlocks it (as <see cref="LockForRestoreAsync"/> does for the others').
    /// </summary>
    /// <param name="eth0">The veth end CRIU moves into the restored namespace as its eth0.</param>
    /// <param name="cgroups">Where its cgroups go on this host (<see cref="CapsuleLimits.RestoreArgs"/>).</param>
    internal async Task<int> RestoreOwnRootAsync(string images, OwnRoot owner, string root, string eth0,
        IEnumerable<string> cgroups, bool lazy, CancellationToken ct)
    {
        var (pidFile, unlocked) = RestoreFiles(images);
        GiveImages(images, owner);
        var r = await Cmd.TryRunAsync("env", [
            $"{CriuHook.LockVariable}={CriuHook.LockTable}", $"{CriuHook.UnlockedVariable}={unlocked}",
            $"{CriuHook.LockNewVariable}={_hook.LockRulesPath}",
            binary, "restore", "-D", images, "-o", "restore.log", "-v2", "-d", "--pidfile", pidFile,
            "--tcp-established", "--network-lock", "skip", "--root", root, "--ext-mount-map", "auto",
            "--external", $"netdev[eth0]:{eth0}", "--action-script", _hook.Path, .. cgroups,
            .. (string[])(lazy ? ["--lazy-pages"] : [])], ct);
        var pid = await RestoredPidAsync(r, images, pidFile, ct);
        // Its hook lifts the lock when CRIU unlocks the network; should it not have, it goes here.
        if (!File.Exists(unlocked))
            await Cmd.TryRunAsync("nsenter", [$"--net=/proc/{pid}/ns/net", "nft", "delete", "table", "inet",
                CriuHook.LockTable], ct);
        return pid;
    }

    /// <summary>
    /// The restored tasks read their own images from inside the capsule's user namespace: before CRIU has
    /// written its id map, as host root without host capabilities; after, as the capsule's root, which is not
    /// the host's. Seen, one of each: "Unable to open tty-info.img: Permission denied" with the images the
    /// agent's (root's, 0600), and "Unable to open timens-0.img" with them the capsule root's. So they stay
    /// root's, and the capsule's root group may read them (0640, folders 0750): still no one else's.
    /// </summary>
    static void GiveImages(string images, OwnRoot owner)
    {
        var all = Directory.EnumerateFileSystemEntries(images, "*", SearchOption.AllDirectories).Append(images);
        foreach (var path in all)
        {
            var mode = Directory.Exists(path) ? 0x1E8u : 0x1A0u; // 0750, 0640
            Native.ThrowIfFailed(Native.lchown(path, 0, owner.IdBase), $"let the capsule's root read {path}");
            Native.ThrowIfFailed(Native.chmod(path, mode), $"let the capsule's root read {path}");
        }
    }
}
