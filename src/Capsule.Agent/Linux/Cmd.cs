using System.Diagnostics;
using System.Text;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// Runs the system's own tools (ip, nft, nsenter) for control-path plumbing. Control code only:
/// nothing here is on the per-packet path, so a process per change is a fair price for using the
/// tools every operator already knows and can read in a log; except where a person waits on it:
/// a capsule's own plumbing, made at every `capsule create`, goes over netlink (<see cref="Rtnl"/>).
/// </summary>
public static class Cmd
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public bool Ok => ExitCode == 0;
    }

    public static async Task<Result> TryRunAsync(string file, IEnumerable<string> args, CancellationToken ct = default,
        string? stdin = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin is not null,
            UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Spawn.Start(psi);
        if (stdin is not null)
        {
            await p.StandardInput.WriteAsync(stdin);
            p.StandardInput.Close();
        }
        var outTask = p.StandardOutput.ReadToEndAsync(ct);
        var errTask = p.StandardError.ReadToEndAsync(ct);
        await p.WaitForExitAsync(ct);
        return new Result(p.ExitCode, await outTask, await errTask);
    }

    public static async Task<string> RunAsync(string file, IEnumerable<string> args, CancellationToken ct = default,
        string? stdin = null)
    {
        var r = await TryRunAsync(file, args, ct, stdin);
        if (!r.Ok)
            throw new CommandFailedException($"`{file} {Quote(args)}` failed (exit {r.ExitCode}): {r.Stderr.Trim()}" +
                $"{(r.Stdout.Length > 0 && r.Stderr.Length == 0 ? r.Stdout.Trim() : "")}");
        return r.Stdout;
    }

    /// <summary>`ip ARGS`, in network namespace <paramref name="netns"/> when given.</summary>
    public static Task<string> Ip(string? netns, params string[] args) =>
        RunAsync("ip", netns is null ? args : ["-n", netns, .. args]);

    public static Task<Result> TryIp(string? netns, params string[] args) =>
        TryRunAsync("ip", netns is null ? args : ["-n", netns, .. args]);

    public static string Quote(IEnumerable<string> args)
    {
        var sb = new StringBuilder();
        foreach (var a in args)
        {
            if (sb.Length > 0) sb.Append(' ');
            sb.Append(a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=@%+,".Contains(c))
                ? a : "'" + a.Replace("'", "'\\''") + "'");
        }
        return sb.ToString();
    }
}
