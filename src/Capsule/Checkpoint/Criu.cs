using System.Diagnostics;
using Capsule.Linux;

namespace Capsule.Checkpoint;

/// <summary>
/// Drives CRIU (4.2.1, installed privately by scripts/install-criu.sh) for a capsule's process
/// tree. The capsule's network namespace is external to the image: the target rebuilds it with the
/// same locator and hands it to CRIU, so the image carries processes and sockets, not plumbing.
/// CRIU's own network lock is skipped because the data plane holds the capsule's traffic while it
/// is frozen (the seed's buffering does the locking).
/// </summary>
internal sealed class Criu(string binary)
{
    public const string DefaultBinary = "/opt/capsule/criu/bin/criu";
    const string NetKey = "capsule-net";

    public string Binary => binary;

    bool _checked;

    /// <summary>`criu check`, once per agent: the kernel and the binary do not change under a running agent.</summary>
    public async Task CheckAsync(CancellationToken ct)
    {
        if (_checked) return;
        if (!File.Exists(binary)) throw new InvalidOperationException($"CRIU is not installed at {binary}; run scripts/install-criu.sh (./capsule does it)");
        var r = await Cmd.TryRunAsync(binary, ["check"], ct);
        if (!r.Ok) throw new InvalidOperationException($"`criu check` failed: {Tail(r.Stderr + r.Stdout)}");
        _checked = true;
    }

    /// <summary>Checkpoints the tree rooted at <paramref name="pid"/>; afterwards the tree is gone (CRIU kills it) or, on failure, still running.</summary>
    public async Task DumpAsync(int pid, string images, CancellationToken ct)
    {
        Directory.CreateDirectory(images);
        var netns = NetnsInode(pid);
        var r = await Cmd.TryRunAsync(binary, ["dump", "-t", pid.ToString(), "-D", images, "-o", "dump.log", "-v2",
            "--tcp-established", "--network-lock", "skip", "--external", $"net[{netns}]:{NetKey}"], ct);
        if (!r.Ok) throw new CheckpointException($"criu dump failed: {LogTail(images, "dump.log")}");
    }

    /// <summary>Restores the tree from <paramref name="images"/> into network namespace <paramref name="netns"/>; returns the host PID of its first process.</summary>
    public async Task<int> RestoreAsync(string images, string netns, CancellationToken ct)
    {
        var pidFile = Path.Combine(images, "restored.pid");
        File.Delete(pidFile);
        // fd 3 is opened on the new namespace by the shell and inherited by CRIU under the key the dump used.
        var r = await Cmd.TryRunAsync("/bin/sh", ["-c", """exec 3<"$1"; shift; exec "$@" """, "sh", $"{Netns.Dir}/{netns}",
            binary, "restore", "-D", images, "-o", "restore.log", "-v2", "-d", "--pidfile", pidFile,
            "--tcp-established", "--network-lock", "skip", "--inherit-fd", $"fd[3]:{NetKey}"], ct);
        if (!r.Ok || !File.Exists(pidFile)) throw new CheckpointException($"criu restore failed: {LogTail(images, "restore.log")}");
        return int.Parse((await File.ReadAllTextAsync(pidFile, ct)).Trim());
    }

    static ulong NetnsInode(int pid)
    {
        // "net:[4026532xxx]"
        var link = new FileInfo($"/proc/{pid}/ns/net").LinkTarget ?? throw new InvalidOperationException($"process {pid} is gone");
        return ulong.Parse(link[5..^1]);
    }

    static string LogTail(string dir, string log)
    {
        var path = Path.Combine(dir, log);
        if (!File.Exists(path)) return "(no log)";
        // The harmless "Can't setup RLIMIT_NOFILE for self" aside, CRIU's errors are the lines that say Error.
        var errors = File.ReadLines(path).Where(l => l.Contains("Error") && !l.Contains("RLIMIT_NOFILE")).TakeLast(4).ToList();
        return (errors.Count > 0 ? string.Join(" | ", errors) : Tail(File.ReadAllText(path))) + $" (log: {path})";
    }

    static string Tail(string s) => string.Join(" | ", s.Split('\n', StringSplitOptions.RemoveEmptyEntries).TakeLast(3));
}

internal sealed class CheckpointException(string message) : Exception(message);

/// <summary>Times the phases of a migration.</summary>
internal sealed class PhaseClock
{
    readonly Stopwatch _total = Stopwatch.StartNew();
    readonly Stopwatch _phase = Stopwatch.StartNew();
    public long Lap() { var ms = _phase.ElapsedMilliseconds; _phase.Restart(); return ms; }
    public long Total => _total.ElapsedMilliseconds;
}
