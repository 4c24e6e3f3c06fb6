using System.Diagnostics;

namespace Capsule.Lab;

/// <summary>
/// How to start this same program again (agents and the directory are `capsule agent` and `capsule directory`).
/// </summary>
internal static class Self
{
    public static (string File, string[] Prefix) Command()
    {
        var path = Environment.ProcessPath
            ?? throw new InvalidOperationException("cannot tell where this program lives");
        // Under `dotnet capsule.dll` the program is the assembly beside the runtime's host; the native
        // binary has no assembly file at all, and never runs that way.
        return Path.GetFileNameWithoutExtension(path) == "dotnet"
            ? (path, [Path.Combine(AppContext.BaseDirectory, "capsule.dll")])
            : (path, []);
    }

    /// <summary>
    /// The command that runs <paramref name="daemon"/> (this program's <paramref name="args"/>) under a
    /// supervisor (`capsule supervise`), which restarts it when it exits unasked.
    /// </summary>
    public static string[] Supervised(
        string daemon, string supervisorPidFile, string daemonPidFile, IEnumerable<string> args)
    {
        var (self, prefix) = Command();
        return SupervisedCommand(daemon, supervisorPidFile, daemonPidFile, [self, .. prefix, .. args]);
    }

    /// <summary>Any <paramref name="command"/> under this program's supervisor (etcd, for one).</summary>
    public static string[] SupervisedCommand(
        string daemon, string supervisorPidFile, string daemonPidFile, IEnumerable<string> command)
    {
        var (self, prefix) = Command();
        return [self, .. prefix, "supervise", "--name", daemon, "--pid-file", supervisorPidFile,
            "--child-pid-file", daemonPidFile, "--", .. command];
    }

    /// <summary>
    /// Starts a daemon detached in its own session (it outlives this command), output to <paramref name="log"/>.
    /// </summary>
    public static void StartDaemon(string log, IEnumerable<string> command)
    {
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        foreach (var a in (string[])["-c", """l=$1; shift; exec setsid -f "$@" </dev/null >>"$l" 2>&1""", "sh", log])
            psi.ArgumentList.Add(a);
        foreach (var a in command) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start /bin/sh");
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"could not start {string.Join(' ', command)} (exit {p.ExitCode})");
    }
}
