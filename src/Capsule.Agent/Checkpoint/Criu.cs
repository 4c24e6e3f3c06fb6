using System.Diagnostics;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// Drives CRIU (4.2.1, installed privately by scripts/install-criu.sh) for a capsule's process
/// tree. The capsule's network namespace is external to the image: the target rebuilds it with the
/// same locator and hands it to CRIU, so the image carries processes and sockets, not plumbing.
/// CRIU's own network lock is skipped because the data plane holds the capsule's traffic while it
/// is frozen (the seed's buffering does the locking); the two places where that is not enough
/// (the source's rollback, a restore's own loopback traffic) are covered by <see cref="CriuHook"/>.
/// </summary>
public sealed partial class Criu(string binary, string scratch)
{
    public const string DefaultBinary = "/opt/capsule/criu/bin/criu";
    const string NetKey = "capsule-net";

    readonly CriuHook _hook = new(scratch);
    bool _checked;

    public string Binary => binary;

    /// <summary>`criu check`, once per agent: the kernel and the binary do not change under a running agent.</summary>
    public async Task CheckAsync(CancellationToken ct)
    {
        if (_checked) return;
        if (!File.Exists(binary))
            throw new InvalidOperationException($"CRIU is not installed at {binary}; " +
                "run scripts/install-criu.sh (./capsule does it)");
        var r = await Cmd.TryRunAsync(binary, ["check"], ct);
        if (!r.Ok) throw new InvalidOperationException($"`criu check` failed: {Tail(r.Stderr + r.Stdout)}");
        _checked = true;
    }

    /// <summary>
    /// Checkpoints the tree rooted at <paramref name="pid"/> and keeps it frozen: the returned
    /// <see cref="FrozenTree"/> ends it (commit, once the capsule runs elsewhere) or resumes it
    /// with its connections (roll back). On failure the tree runs on, as before.
    /// </summary>
    /// <param name="pages">Where the memory pages go, when not into <paramref name="images"/>: to a page server
    /// as the dump goes (<see cref="StartPageServer"/>), or, with <paramref name="lazy"/> (post-copy), served
    /// once the verdict is commit, until the target has them all (CRIU's lazy dump).</param>
    /// <param name="ownRoot">The tree has its own user and mount namespaces (<see cref="OwnRoot"/>): its
    /// network namespace goes into the image (<see cref="OwnRootDumpArgs"/>).</param>
    internal async Task<FrozenTree> DumpAsync(int pid, bool ownRoot, string images, PageSocket? pages, bool lazy,
        CancellationToken ct)
    {
        Directory.CreateDirectory(images);
        var verdict = Path.Combine(images, "verdict");
        File.Delete(verdict);
        File.Delete(verdict + ".ready");
        if (Native.mkfifo(verdict, 0x180) != 0)
            throw new IOException($"mkfifo {verdict} failed (errno {Native.Errno})");
        // Through a shell, with its output in a file: the dump must outlive this agent if it dies
        // while the tree is frozen, so that a restarted agent can still give the verdict.
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        string[] args =
        [
            "-c", """v=$1; shift; CAPSULE_VERDICT=$v exec setsid "$@" </dev/null >>"$v.out" 2>&1""", "sh", verdict,
            binary, "dump", "-t", pid.ToString(), "-D", images, "-o", "dump.log", "-v2",
            "--tcp-established", "--network-lock", "skip", "--action-script", _hook.Path,
            .. ownRoot ? OwnRootDumpArgs : ["--external", $"net[{NetnsInode(pid)}]:{NetKey}"],
        ];
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (pages is not null)
        {
            psi.ArgumentList.Add(lazy ? "--lazy-pages" : "--page-server");
            psi.ArgumentList.Add("--ps-socket");
            psi.ArgumentList.Add(pages.Child.ToString());
        }
        var process = Spawn.Start(psi, pages?.Child ?? -1);
        pages?.CloseChild();
        // The shell execs setsid, which execs CRIU (no fork: the shell leads no process group), so
        // this pid is CRIU's: a restarted agent waits for it before it decides (FrozenTree.ReattachAsync).
        await File.WriteAllTextAsync(FrozenTree.DumpPidFile(images), process.Id.ToString(), CancellationToken.None);
        var tree = new FrozenTree(pid, images, verdict, process);
        while (!File.Exists(verdict + ".ready"))
        {
            if (process.HasExited)
                throw new CheckpointException($"criu dump failed: {LogTail(images, "dump.log")}");
            await Task.Delay(2, ct);
        }
        return tree;
    }

    /// <summary>
    /// Restores the tree from <paramref name="images"/> into network namespace <paramref name="netns"/>
    /// (locked by <see cref="LockForRestoreAsync"/>); returns the host PID of its first process.
    /// </summary>
    /// <param name="lazy">
    /// Post-copy: the memory comes from the lazy-pages daemon (<see cref="StartLazyPagesAsync"/>).
    /// </param>
    public async Task<int> RestoreAsync(string images, string netns, bool lazy, CancellationToken ct)
    {
        var (pidFile, unlocked) = RestoreFiles(images);
        // fd 3 is opened on the new namespace by the shell and inherited by CRIU under the key the dump used.
        var r = await Cmd.TryRunAsync("/bin/sh", ["-c", """exec 3<"$1"; shift; exec "$@" """, "sh",
            $"{Netns.Dir}/{netns}",
            "env", $"{CriuHook.LockVariable}={CriuHook.LockTable}", $"{CriuHook.UnlockedVariable}={unlocked}",
            binary, "restore", "-D", images, "-o", "restore.log", "-v2", "-d", "--pidfile", pidFile,
            "--tcp-established", "--network-lock", "skip", "--inherit-fd", $"fd[3]:{NetKey}",
            "--action-script", _hook.Path, .. (string[])(lazy ? ["--lazy-pages"] : [])], ct);
        // CRIU's network-unlock hook has removed the lock and said so; should it not have, traffic
        // would stall, so the lock goes here (a process spawn the usual path does without).
        if (!File.Exists(unlocked)) await UnlockAsync(netns);
        return await RestoredPidAsync(r, images, pidFile, ct);
    }

    /// <summary>Where a restore writes the restored tree's pid, and where its hook says it lifted the lock.</summary>
    static (string PidFile, string Unlocked) RestoreFiles(string images)
    {
        var pidFile = Path.Combine(images, "restored.pid");
        var unlocked = Path.Combine(images, "restore.unlocked");
        File.Delete(pidFile);
        File.Delete(unlocked);
        return (pidFile, unlocked);
    }

    static async Task<int> RestoredPidAsync(Cmd.Result r, string images, string pidFile, CancellationToken ct)
    {
        if (!r.Ok || !File.Exists(pidFile))
            throw new CheckpointException($"criu restore failed: {LogTail(images, "restore.log")}");
        return int.Parse((await File.ReadAllTextAsync(pidFile, ct)).Trim());
    }

    /// <summary>
    /// Before a restore: nothing moves in the namespace but CRIU's own packets (mark 0xC114). When
    /// CRIU takes a socket out of repair mode the kernel sends a window probe; with both ends of a
    /// connection inside the capsule (loopback) the other end may not be restored yet, and the
    /// answer would be a reset that kills the connection ("Can't restore not-sent send queue
    /// data … Broken pipe"). This is CRIU's own network lock, which --network-lock skip leaves
    /// out; the hook lifts it when CRIU unlocks the network, before the tree resumes.
    /// </summary>
    public static Task LockForRestoreAsync(string netns) =>
        Cmd.RunAsync("ip", ["netns", "exec", netns, "nft", "-f", "-"], stdin: CriuHook.LockRules);

    static Task UnlockAsync(string netns) =>
        Cmd.TryRunAsync("ip", ["netns", "exec", netns, "nft", "delete", "table", "inet", CriuHook.LockTable]);

    static ulong NetnsInode(int pid)
    {
        // "net:[4026532xxx]"
        var link = new FileInfo($"/proc/{pid}/ns/net").LinkTarget
            ?? throw new InvalidOperationException($"process {pid} is gone");
        return ulong.Parse(link[5..^1]);
    }

    internal static string LogTail(string dir, string log)
    {
        var path = Path.Combine(dir, log);
        if (!File.Exists(path)) return "(no log)";
        // The harmless "Can't setup RLIMIT_NOFILE for self" aside, CRIU's errors are the lines that say Error.
        var errors = File.ReadLines(path)
            .Where(l => l.Contains("Error") && !l.Contains("RLIMIT_NOFILE"))
            .TakeLast(4)
            .ToList();
        return (errors.Count > 0 ? string.Join(" | ", errors) : Tail(File.ReadAllText(path))) + $" (log: {path})";
    }

    static string Tail(string s) =>
        string.Join(" | ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries).TakeLast(3));
}

internal sealed class CheckpointException(string message) : Exception(message);

/// <summary>Times the phases of a migration.</summary>
internal sealed class PhaseClock
{
    readonly Stopwatch _total = Stopwatch.StartNew();
    readonly Stopwatch _phase = Stopwatch.StartNew();

    public long Lap()
    {
        var ms = _phase.ElapsedMilliseconds;
        _phase.Restart();
        return ms;
    }

    public long Total => _total.ElapsedMilliseconds;
}
