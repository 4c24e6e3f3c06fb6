using System.Diagnostics;
using System.Globalization;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

/// <summary>CRIU's lazy pages (post-copy): what a host needs for it, and the target's lazy-pages daemon.</summary>
public sealed partial class Criu
{
    /// <summary>
    /// The pipe size CRIU's lazy dump needs: root on this machine kind lacks CAP_SYS_RESOURCE, so CRIU
    /// cannot grow its page pipes past fs.pipe-max-size, and the default (1 MiB) fails the transfer
    /// ("page-pipe: tee: 65536: Operation not permitted"; ../shared/DESIGN.md).
    /// </summary>
    public const long PostCopyPipeMaxSize = 256L << 20;

    bool _postCopyChecked;

    /// <summary>This host's fs.pipe-max-size now.</summary>
    public static long PipeMaxSize() =>
        long.Parse(File.ReadAllText("/proc/sys/fs/pipe-max-size").Trim(), CultureInfo.InvariantCulture);

    /// <summary>Why this host cannot take part in a post-copy move; null when it can.</summary>
    public async Task<string?> PostCopyProblemAsync(CancellationToken ct)
    {
        if (_postCopyChecked) return null;
        var size = PipeMaxSize();
        if (size < PostCopyPipeMaxSize)
            return $"fs.pipe-max-size is {size}; post-copy needs at least {PostCopyPipeMaxSize} " +
                $"(sysctl -w fs.pipe-max-size={PostCopyPipeMaxSize}, and in /etc/sysctl.d to keep it)";
        var r = await Cmd.TryRunAsync(binary, ["check", "--feature", "uffd-noncoop"], ct);
        if (!r.Ok) return $"the kernel lacks what CRIU's lazy pages need (userfaultfd): {Tail(r.Stderr + r.Stdout)}";
        _postCopyChecked = true;
        return null;
    }

    /// <summary>
    /// Starts the daemon that fills a lazily restored tree's memory: it asks for the pages the tree
    /// faults on first, pushes the rest in the background, and ends, with status 0, only once every
    /// page arrived. Its shell kills the restored tree if it ends otherwise, whether or not this
    /// agent still runs: a page that never came would read as zeros, and the capsule must not run on
    /// with memory it never had. Returns once the daemon listens for the restore.
    /// </summary>
    internal async Task<Process> StartLazyPagesAsync(string images, PageSocket pages, CancellationToken ct)
    {
        var pidFile = Path.Combine(images, "restored.pid");
        var socket = Path.Combine(images, "lazy-pages.socket");
        File.Delete(socket);
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        string[] args =
        [
            "-c", """p=$1; shift; "$@" </dev/null >>"$p.out" 2>&1; rc=$?; """
                + """[ $rc -ne 0 ] && [ -s "$p" ] && kill -9 "$(cat "$p")"; exit $rc""", "sh", pidFile,
            binary, "lazy-pages", "--page-server", "--ps-socket", pages.Child.ToString(),
            "-D", images, "-o", "lazy-pages.log", "-v2",
        ];
        foreach (var a in args) psi.ArgumentList.Add(a);
        var daemon = Spawn.Start(psi, pages.Child);
        pages.CloseChild();
        var sw = Stopwatch.StartNew();
        while (!File.Exists(socket))
        {
            if (daemon.HasExited || sw.Elapsed > TimeSpan.FromSeconds(10))
            {
                if (!daemon.HasExited) daemon.Kill();
                throw new CheckpointException($"criu lazy-pages did not start: {LogTail(images, "lazy-pages.log")}");
            }
            await Task.Delay(1, ct);
        }
        return daemon;
    }
}
