using System.Diagnostics;

namespace Capsule.Cli;

/// <summary>Programs the CLI runs in the foreground, on this terminal (`capsule exec`'s nsenter).</summary>
public static class Terminal
{
    /// <summary>Runs a command attached to this terminal and returns its exit code.</summary>
    public static async Task<int> RunAttachedAsync(string file, IEnumerable<string> args,
        CancellationToken ct = default)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        await p.WaitForExitAsync(ct);
        return p.ExitCode;
    }
}
