using System.Diagnostics;

namespace Capsule.Agent.Linux;

/// <summary>
/// Starts a capsule's first process in the capsule's network namespace and new PID, UTS and IPC
/// namespaces, as PID 1 and a session leader there (which CRIU needs to checkpoint the tree as a
/// unit), with its stdio on files in the capsule's own area rather than on anything of the host's.
/// </summary>
public static class CapsuleProcess
{
    // Runs as the capsule's PID 1 before the command replaces it: name the UTS namespace after the
    // capsule, work in the capsule's own folder with its own scratch space (TMPDIR), so what it
    // writes travels with it, point stdio at the capsule's files, then exec setsid, which execs
    // the command in place (it is not a group leader, so setsid need not fork): it keeps PID 1.
    const string Init = """n=$1 o=$2 e=$3; shift 3; hostname "$n" && cd "${o%/*}" && mkdir -p tmp && """
        + """export TMPDIR="$PWD/tmp" && exec setsid "$@" </dev/null >>"$o" 2>>"$e" """;

    public sealed record Started(int Pid, Process Launcher);

    public static async Task<Started> StartAsync(string netns, string name, string stdoutPath, string stderrPath,
        IReadOnlyList<string> command, CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo("nsenter") { UseShellExecute = false };
        foreach (var a in (string[])[$"--net={Netns.Dir}/{netns}", "--",
                     "unshare", "--pid", "--uts", "--ipc", "--fork", "--",
                     "/bin/sh", "-c", Init, "capsule-init", name, stdoutPath, stderrPath])
            psi.ArgumentList.Add(a);
        foreach (var a in command) psi.ArgumentList.Add(a);
        var launcher = Spawn.Start(psi);
        // unshare forks the namespace's PID 1 and waits for it; that child is the capsule.
        var children = $"/proc/{launcher.Id}/task/{launcher.Id}/children";
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(10))
        {
            if (launcher.HasExited)
                throw new InvalidOperationException("the capsule's first process exited at once " +
                    $"(exit {launcher.ExitCode}); see its stderr: {stderrPath}");
            try
            {
                var text = (await File.ReadAllTextAsync(children, ct)).Trim();
                // nsenter has exec'd unshare by the time a child shows up, so the launcher is unshare.
                if (text.Length > 0 && int.TryParse(text.Split(' ')[0], out var pid)) return new Started(pid, launcher);
            }
            catch (IOException) { }
            await Task.Delay(5, ct);
        }
        launcher.Kill(entireProcessTree: true);
        throw new TimeoutException("the capsule's first process did not appear within 10 s");
    }

    public static bool IsAlive(int pid) => pid > 0 && Directory.Exists($"/proc/{pid}") && !IsZombie(pid);

    /// <summary>Kills the capsule's PID 1, which makes the kernel kill every process in its PID namespace.</summary>
    public static async Task KillAsync(int pid)
    {
        if (!IsAlive(pid)) return;
        Native.kill(pid, 9);
        for (var i = 0; i < 200 && IsAlive(pid) && !IsZombie(pid); i++) await Task.Delay(10);
    }

    static readonly string[] NamespaceKinds = ["user", "mnt", "pid", "net", "uts", "ipc", "cgroup"];

    /// <summary>
    /// Process <paramref name="pid"/>'s namespaces, each with whether it is its own (not the agent's): what
    /// `capsule inspect` shows. A process gone meanwhile has none.
    /// </summary>
    public static IEnumerable<(string Kind, ulong Inode, bool Own)> Namespaces(int pid)
    {
        foreach (var kind in NamespaceKinds)
        {
            // The namespace file's own inode is the namespace's (what "net:[4026532xxx]" shows).
            var its = Native.Inode($"/proc/{pid}/ns/{kind}");
            if (its != 0) yield return (kind, its, its != Native.Inode($"/proc/self/ns/{kind}"));
        }
    }

    /// <summary>Its capability bounding set (CapBnd in /proc/PID/status), 0 if it is gone.</summary>
    public static ulong CapBounding(int pid)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith("CapBnd:"));
            return line is null ? 0 : Convert.ToUInt64(line[7..].Trim(), 16);
        }
        catch (IOException) { return 0; }
    }

    static bool IsZombie(int pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1].StartsWith('Z'); }
        catch (IOException) { return false; }
    }
}
