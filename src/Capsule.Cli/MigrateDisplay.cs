using Capsule.Protos;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Capsule.Cli;

/// <summary>
/// What `capsule migrate` shows while the move runs: each phase as it starts, and for a transfer that lasts longer
/// than a second (the agent reports only those) its percentage, rate and time left. On a terminal the progress is
/// one line redrawn in place (a Spectre.Console live display); otherwise each report is a plain line of its own.
/// </summary>
internal static class MigrateDisplay
{
    /// <summary>Reads the agent's reports until the result, showing them unless <paramref name="quiet"/>.</summary>
    public static async Task<MigrateResult?> FollowAsync(IAsyncEnumerable<MigrateProgress> reports, bool quiet)
    {
        if (quiet || Console.IsOutputRedirected) return await PlainAsync(reports, quiet);
        MigrateResult? result = null;
        var lines = new List<IRenderable>();
        IRenderable? progress = null;
        IRenderable View() => new Rows(progress is null ? lines : [.. lines, progress]);
        await AnsiConsole.Live(View()).StartAsync(async live =>
        {
            await foreach (var p in reports)
            {
                if (p.Result is not null)
                {
                    result = p.Result;
                    break;
                }
                if (p.BytesTotal > 0) progress = new Markup(Markup.Escape(Describe(p)));
                else
                {
                    progress = null;
                    lines.Add(new Markup(PhaseLine(p)));
                }
                live.UpdateTarget(View());
            }
        });
        return result;
    }

    static async Task<MigrateResult?> PlainAsync(IAsyncEnumerable<MigrateProgress> reports, bool quiet)
    {
        await foreach (var p in reports)
        {
            if (p.Result is not null) return p.Result;
            if (quiet) continue;
            if (p.BytesTotal > 0) Console.WriteLine(Describe(p));
            else AnsiConsole.MarkupLine(PhaseLine(p));
        }
        return null;
    }

    static string PhaseLine(MigrateProgress p) =>
        $"[grey]{DateTime.Now:HH:mm:ss.fff}[/] [bold]{p.Phase,-9}[/] {Markup.Escape(p.Message)}";

    /// <summary>"transfer   42% 8.4 of 20.0 MiB at 10.0 MiB/s, 1.2 s left".</summary>
    internal static string Describe(MigrateProgress p)
    {
        var percent = p.BytesTotal > 0 ? Math.Min(100, p.BytesDone * 100 / p.BytesTotal) : 0;
        var left = p.EtaMs >= 0 ? $"{p.EtaMs / 1000.0:F1} s left" : "time left unknown";
        return $"{DateTime.Now:HH:mm:ss.fff} {p.Phase,-9} {percent,3}% {Mib(p.BytesDone)} of {Mib(p.BytesTotal)} MiB " +
            $"at {Mib(p.Rate)} MiB/s, {left}";
    }

    static string Mib(long bytes) => (bytes / (1024.0 * 1024)).ToString("F1");

    /// <summary>
    /// `migrate --report`: one row per socket of the capsule, in plain aligned columns: a table of ten columns wider
    /// than 80 would be wrapped cell by cell where the output is not a terminal (80 columns is Spectre's guess there).
    /// </summary>
    public static void PrintReport(MigrateResult r)
    {
        if (r.Flows.Count == 0)
        {
            Console.WriteLine("the capsule had no TCP or UDP sockets to report");
            return;
        }
        string[] head = ["PROTO", "LOCAL", "PEER", "STATE", "HELD BY", "HELD", "FLUSHED", "STALL MS", "PAUSED",
            "SURVIVED"];
        var rows = r.Flows.Select(f => new[]
        {
            f.Protocol, f.Local, f.Peer, f.State, f.Holder.Length > 0 ? f.Holder : "-", f.Held.ToString(),
            f.Flushed.ToString(), f.StallMs.ToString(), f.Paused ? "zero-window" : "no", f.Survived ? "yes" : "NO",
        }).Prepend(head).ToList();
        var widths = head.Select((_, i) => rows.Max(row => row[i].Length)).ToArray();
        foreach (var row in rows)
            Console.WriteLine(string.Join("  ", row.Select((cell, i) => cell.PadRight(widths[i]))).TrimEnd());
    }
}
