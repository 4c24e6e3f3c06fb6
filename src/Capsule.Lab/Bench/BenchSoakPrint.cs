using System.Globalization;
using System.Text;
using System.Text.Json;
using Capsule.Cli;
using Capsule.Protos;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    static partial class SoakBench
    {
        static void Print(SoakReport r)
        {
            // A redirected console is given 80 columns; a file or pipe has no width to keep to.
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 160);
            var t = Output.Table("", "RESULT");
            t.Columns[0].NoWrap();
            var asked = r.StoppedByTimeBound ? $" of {r.MigrationsAsked} asked (time bound reached)" : "";
            var moves = $"{r.MigrationsDone} / {r.MigrationsFailed}";
            t.AddRow("migrations done / failed", Bad(r.MigrationsFailed > 0, moves) + asked);
            t.AddRow("TCP stream errors / resets", Bad(r.Tcp.Errors > 0, $"{r.Tcp.Errors} / {r.Tcp.Resets}")
                + (r.Tcp.Sent is { } s ? $" ({s} bytes sent, {r.Tcp.Echoed} echoed, each byte checked)" : ""));
            t.AddRow("UDP datagrams lost / counted dropped", UdpCell(r.Udp));
            t.AddRow("download sha256 ok", Bad(r.Download.Ok != r.Download.Count || r.Download.Count == 0,
                $"{r.Download.Ok} of {r.Download.Count}") + $" ({r.Download.Bytes >> 20} MiB, {OrdinaryHost} via gw)");
            var stallOf = $" (n={r.StallMs.N}: {Server} and {UdpReceiver} moves)";
            t.AddRow("stall p50 / p99 / max (ms)", Ms(r.StallMs) + stallOf);
            t.AddRow("migration time p50 / p99 / max (ms)", Ms(r.MigrationMs) + $" (n={r.MigrationMs.N})");
            t.AddRow("total time", $"{r.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture)} s");
            AnsiConsole.Write(t);
            AnsiConsole.MarkupLine($"[grey](migrations one after another, {Server}, {UdpReceiver}, {Web} in turn, "
                + $"each to the next of h1 → h2 → h3; STALL = the longest gap overlapping the move seen by "
                + $"{StreamClient} between echoes ({Server}) or by {UdpReceiver} between datagrams; gaps under "
                + $"{GapMs} ms are not reported, so a move "
                + $"without one counts as {GapMs}; migration time = the source agent's total)[/]");
            PrintProblems(r);
        }

        static void PrintProblems(SoakReport r)
        {
            foreach (var m in r.Migrations.Where(m => !m.Ok))
                AnsiConsole.MarkupLine($"[red]migration {m.Number} "
                    + $"({Markup.Escape($"{m.Capsule} {m.From} → {m.To}")}) failed: "
                    + $"{Markup.Escape(m.Error ?? "")}{(m.ResumedOnSource ? " (resumed on the source)" : "")}[/]");
            foreach (var e in r.Tcp.ErrorLines) AnsiConsole.MarkupLine($"[red]{Markup.Escape(e)}[/]");
            if (r.Udp.Error is { } ue) AnsiConsole.MarkupLine($"[red]{Markup.Escape(ue)}[/]");
            foreach (var f in r.Download.Failures) AnsiConsole.MarkupLine($"[red]download: {Markup.Escape(f)}[/]");
            if (r.LogsKept is { } dir)
                AnsiConsole.MarkupLine($"[yellow]agents' and capsules' logs kept in {Markup.Escape(dir)}[/]");
        }

        static string UdpCell(UdpOutcome u)
        {
            if (u.Lost is not { } lost) return $"[red]—[/] (counted dropped {u.CountedDropped})";
            var cell = Bad(lost > u.CountedDropped, $"{lost} / {u.CountedDropped}");
            var missing = lost > 0 ? $", missing #{u.Missing}" : "";
            return cell + $" ({u.Sent} sent, {u.Received} received, {u.Duplicates} duplicates, "
                + $"{u.Reordered} reordered, "
                + $"{u.Held} held by the moves{missing})";
        }

        static string Ms(Percentiles p) => p.N == 0 ? "—" : $"{F(p.P50)} / {F(p.P99)} / {F(p.Max)}";

        static string F(double? v) => v?.ToString("F0", CultureInfo.InvariantCulture) ?? "—";

        static string Bad(bool bad, string text) => bad ? $"[red]{Markup.Escape(text)}[/]" : Markup.Escape(text);
    }

    /// <summary>A run that found something keeps what a person needs to read it before the lab goes.</summary>
    static class SoakLogs
    {
        public static async Task<string> KeepAsync(Session s, object report, IEnumerable<string> capsules,
            CancellationToken ct)
        {
            var dir = Path.Combine("/var/tmp", $"capsule-soak-{DateTime.Now:yyyyMMdd-HHmmss}");
            Directory.CreateDirectory(dir);
            // The agents', the gateway's and the directory's logs.
            foreach (var f in Directory.GetFiles(s.Paths.RunDir, "*.log"))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
            foreach (var name in capsules)
            {
                var stdout = await CapsuleLog(s, name, false, ct);
                await File.WriteAllTextAsync(Path.Combine(dir, $"capsule-{name}.out"), stdout, ct);
                var stderr = await CapsuleLog(s, name, true, ct);
                await File.WriteAllTextAsync(Path.Combine(dir, $"capsule-{name}.err"), stderr, ct);
            }
            var json = JsonSerializer.Serialize(report, LabJson.Default.SoakReport);
            await File.WriteAllTextAsync(Path.Combine(dir, "report.json"), json, ct);
            return dir;
        }

        static async Task<string> CapsuleLog(Session s, string name, bool stderr, CancellationToken ct)
        {
            try
            {
                var (_, agent) = await s.CapsuleAsync(name, ct);
                var r = await agent.LogsAsync(new LogsRequest { Name = name, Stderr = stderr, MaxBytes = 16 << 20 },
                    cancellationToken: ct);
                return Encoding.UTF8.GetString(r.Data.Span);
            }
            catch (Exception e) when (e is RpcException or UserError or Dir.DirectoryException)
            {
                return $"(not readable: {e.Message})";
            }
        }
    }
}
