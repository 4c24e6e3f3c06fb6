using System.Globalization;
using System.Text.Json.Serialization;
using Capsule.Cli;
using Capsule.Protos;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    /// <summary>The application rows of `capsule bench migrate` as reported: a record each, and their table.</summary>
    internal static partial class MigrateBench
    {
        /// <summary>
        /// One application row. WorstWaitMs: redis, the highest latency redis-benchmark reported in the tests
        /// that ended after the migration began; JVM, the longest wait between replies over the whole run.
        /// WorstWaitCapped: redis-benchmark's ceiling was reached, so the wait was at least that.
        /// WorstWaitBeforeMs: the same measure before the migration began. Null where it could not be
        /// measured; MigrationError and ClientError say why.
        /// </summary>
        internal sealed record AppRow(
            string Mode,
            string App,
            bool PostCopy,
            bool MigrationOk,
            string? MigrationError,
            double? WorstWaitMs,
            bool WorstWaitCapped,
            double? WorstWaitBeforeMs,
            double? RequestsPerSecond,
            long? Requests,
            BenchPhasesJson? PhasesMs,
            long? ImageBytes,
            long? PostCopyBytes,
            long? Held,
            long? Flushed,
            long? Dropped,
            long? PeerRtos,
            long? PeerRetransSegs,
            string? ClientError,
            [property: JsonIgnore] MigrateResult? Result);

        static AppRow NotRun(string mode, string app, bool postCopy, string error) =>
            new(mode, app, postCopy, false, "not attempted", null, false, null, null, null, null, null, null,
                null, null, null, null, null, error, null);

        static AppRow AppRowOf(string mode, string app, bool postCopy, MigrateResult r, ClientOutcome c,
            Dictionary<string, long>? peerBefore, Dictionary<string, long>? peerAfter) =>
            new(mode, app, postCopy, r.Ok, r.Ok ? null : r.Error,
                c.WorstWaitMs, c.Capped, c.BeforeMs, c.RequestsPerSecond, c.Requests,
                r.Times is not null ? BenchPhasesJson.Of(r.Times) : null,
                r.Ok ? r.ImageBytes : null,
                r.Ok && postCopy ? r.PostCopyBytes : null,
                r.Held, r.Flushed, r.Dropped,
                Delta(peerBefore, peerAfter, "TcpExt.TCPTimeouts"), Delta(peerBefore, peerAfter, "Tcp.RetransSegs"),
                c.Error, r);

        static void PrintApps(List<AppRow> rows)
        {
            static string N(long? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "—";
            static string Ms(double? v) => v?.ToString("F0", CultureInfo.InvariantCulture) ?? "—";
            static string KiB(long? v) =>
                v is { } b ? (b / 1024.0).ToString("F0", CultureInfo.InvariantCulture) : "—";
            var t = Output.Table("APPLICATION", "WORST WAIT", "BEFORE", "REQ/S", "SYNC", "FREEZE+DUMP", "TRANSFER",
                "RESTORE", "FLUSH", "TOTAL", "FROZEN", "TAIL", "IMAGE KiB", "PAGES AFTER KiB", "HELD/FLUSHED/DROPPED",
                "PEER RTOs", "PEER RETRANS");
            for (var i = 1; i < t.Columns.Count; i++) t.Columns[i].RightAligned();
            t.Columns[0].NoWrap();
            foreach (var r in rows)
            {
                var ok = r.Result is { Ok: true };
                var times = r.Result?.Times;
                // A failed migration still has the times of the phases it went through.
                string P(Func<PhaseTimes, long> f) =>
                    times is not null && (ok || f(times) > 0) ? f(times).ToString(CultureInfo.InvariantCulture) : "—";
                var worst = r.WorstWaitMs is not { } w ? "[red]—[/]"
                    : r.WorstWaitCapped ? $"[red]≥{Ms(w)}³[/]"
                    : r.App == "redis" && w > RedisGoalMs ? $"[yellow]{Ms(w)}[/]" : Ms(w);
                t.AddRow(
                    ok ? Markup.Escape(r.Mode) : $"[red]{Markup.Escape(r.Mode)}[/]",
                    worst, Ms(r.WorstWaitBeforeMs), r.RequestsPerSecond is { } q ? Ms(q) : "—",
                    P(x => x.SyncMs), P(x => x.DumpMs), P(x => x.TransferMs), P(x => x.RestoreMs), P(x => x.FlushMs),
                    P(x => x.TotalMs), P(x => x.FreezeMs),
                    r.PostCopy ? P(x => x.PostCopyTailMs) : "—",
                    KiB(r.ImageBytes), KiB(r.PostCopyBytes),
                    r.Result is null ? "—" : $"{r.Held}/{r.Flushed}/{r.Dropped}",
                    r.PeerRtos is > 0 ? $"[yellow]{r.PeerRtos}[/]" : N(r.PeerRtos),
                    N(r.PeerRetransSegs));
            }
            AnsiConsole.Write(t);
            AnsiConsole.MarkupLine(
                "[grey](times in ms; each server migrated h2 → h3 under its client on h1. WORST WAIT: redis = the " +
                $"highest latency redis-benchmark reported (-c {RedisClients}, SET and GET over the {RedisKeys} " +
                $"keys, {RedisRequestsPerTest} requests a test, in a loop) in the tests that ended after the " +
                "migration began; JVM = the longest wait between replies httprr.py saw on its one keep-alive " +
                "connection to Server.java (java Server.java, the JDK's HTTP server), over the whole run. " +
                "BEFORE = the same before the migration began (for the JVM: its warm-up). " +
                "REQ/S = over the whole run. " +
                "PAGES AFTER (post-copy) = memory sent once the capsule ran on h3. PEER = the client capsule's " +
                "TCPTimeouts and RetransSegs over the migration.)[/]");
            foreach (var r in rows)
            {
                if (r.MigrationError is { } me)
                    AnsiConsole.MarkupLine($"[red]{Markup.Escape(r.Mode)}: migration failed: {Markup.Escape(me)}[/]");
                if (r.ClientError is { } ce)
                    AnsiConsole.MarkupLine($"[red]{Markup.Escape(r.Mode)}: {Markup.Escape(ce)}[/]");
            }
            AnsiConsole.MarkupLine($"[grey]Goal: the worst redis latency across a migration ≤ {RedisGoalMs} ms." +
                (rows.Any(r => r.WorstWaitCapped)
                    ? " ³ redis-benchmark records every latency above 3 s as 3 s: the wait was at least that."
                    : "") + "[/]");
        }
    }
}
