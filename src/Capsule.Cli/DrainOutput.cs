using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>
/// How a drain is shown: a live table on a terminal (one row per capsule: target, phase, bytes, rate, time
/// left), a line per change otherwise, and a summary at the end.
/// </summary>
internal static class DrainOutput
{
    public static async Task<DrainReport> LastAsync(AsyncServerStreamingCall<DrainReport> call, CancellationToken ct)
    {
        DrainReport? last = null;
        await foreach (var r in call.ResponseStream.ReadAllAsync(ct)) last = r;
        return last ?? throw new UserError("the agent sent no drain report");
    }

    public static async Task<DrainReport> FollowAsync(IAsyncEnumerable<DrainReport> reports, DrainReport first)
    {
        var last = first;
        if (!Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive)
        {
            await AnsiConsole.Live(Table(first)).StartAsync(async ctx =>
            {
                await foreach (var r in reports)
                {
                    last = r;
                    ctx.UpdateTarget(Table(r));
                }
            });
            return last;
        }
        var phases = new Dictionary<string, string>();
        Lines(first, phases);
        await foreach (var r in reports)
        {
            last = r;
            Lines(r, phases);
        }
        return last;
    }

    /// <summary>A line for each capsule whose phase changed since the last report (output to a file or pipe).</summary>
    static void Lines(DrainReport r, Dictionary<string, string> phases)
    {
        foreach (var i in r.Items)
        {
            if (phases.GetValueOrDefault(i.Capsule) == i.Phase) continue;
            phases[i.Capsule] = i.Phase;
            var error = i.Error.Length > 0 ? ": " + i.Error : "";
            Console.Out.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {i.Capsule} -> {Target(i)} {i.Phase}{error}");
        }
    }

    static Table Table(DrainReport r)
    {
        var t = Output.Table("CAPSULE", "TO", "PHASE", "BYTES", "RATE", "TIME", "LEFT");
        foreach (var i in r.Items)
            t.AddRow(Markup.Escape(i.Capsule), Markup.Escape(Target(i)), Phase(i), Bytes(i.Bytes),
                i.BytesPerSecond > 0 ? Bytes((long)i.BytesPerSecond) + "/s" : "", Ms(i.ElapsedMs),
                i.Phase is "moved" or "failed" ? "" : Ms(i.LeftMs));
        var ended = r.State is DrainState.Done or DrainState.Stopped or DrainState.Failed;
        t.Caption($"drain of {r.Host}: {EventNames.DrainState(r.State)}, {r.Moved} of {r.Items.Count} moved, " +
            $"{r.Parallel} at once, " + (ended ? Ms(r.ElapsedMs) : $"{Ms(r.ElapsedMs)} so far, {Ms(r.LeftMs)} left"));
        return t;
    }

    public static void Summary(DrainReport r)
    {
        AnsiConsole.Write(Table(r));
        var state = EventNames.DrainState(r.State);
        Console.Out.WriteLine(r.State switch
        {
            DrainState.None => $"{r.Host} has not been drained since its agent started" +
                (r.Cordoned ? "; it is cordoned" : ""),
            DrainState.Done => $"{r.Host} is empty: {r.Moved} capsules moved in {Ms(r.ElapsedMs)}; it stays cordoned " +
                $"until `capsule uncordon {r.Host}`",
            DrainState.Running or DrainState.Stopping => $"drain of {r.Host} {state}: {r.Moved} of {r.Items.Count} " +
                "moved so far",
            _ => $"drain of {r.Host} {state}: {r.Moved} moved, {r.Items.Count - r.Moved} left on it " +
                $"({r.Failed} failed); `capsule drain {r.Host}` tries those again",
        });
        foreach (var i in r.Items.Where(i => i.Error.Length > 0))
            Output.Error($"{i.Capsule}: {i.Error}");
    }

    static string Target(DrainItem i) => i.Target.Length > 0 ? i.Target : "-";

    static string Phase(DrainItem i) => i.Phase switch
    {
        "moved" => "[green]moved[/]",
        "failed" => "[red]failed[/]",
        "waiting" => "[grey]waiting[/]",
        var p => $"[blue]{Markup.Escape(p)}[/]",
    };

    static string Bytes(long b) => b switch
    {
        0 => "",
        < 1 << 20 => $"{b / 1024.0:F0} KiB",
        _ => $"{b / 1048576.0:F1} MiB",
    };

    static string Ms(long ms) => ms switch
    {
        < 0 => "?",
        < 1000 => $"{ms} ms",
        _ => $"{ms / 1000.0:F1} s",
    };
}
