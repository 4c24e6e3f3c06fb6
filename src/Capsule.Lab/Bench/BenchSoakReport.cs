using System.Globalization;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Capsule.Protos;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    internal static partial class SoakBench
    {
        /// <summary>One migration: what the source agent answered, and the stall its observer saw.</summary>
        internal sealed record SoakMove(
            int Number, string Capsule, string From, string To, bool Ok, string? Error, bool ResumedOnSource,
            DateTimeOffset Start, DateTimeOffset End, long TotalMs, BenchPhasesJson PhasesMs, long ImageBytes,
            int Peers, long Held, long Flushed, long Dropped, long Unaccounted)
        {
            /// <summary>The longest gap its observer saw during the move; null when it has none (web).</summary>
            public double? StallMs { get; init; }
            /// <summary>No gap over the threshold at all: StallMs is the threshold, an upper bound.</summary>
            public bool StallBelowThreshold { get; init; }
            /// <summary>
            /// What the source reported lost with the freeze: connections CRIU could not take, queued UDP.
            /// </summary>
            public int ClosingConnectionsLost { get; init; }
            public long UdpBytesLostAtFreeze { get; init; }

            public static SoakMove FromResult(int number, string name, string from, string to, DateTimeOffset start,
                DateTimeOffset end, MigrateResult r)
            {
                var t = r.Times ?? new PhaseTimes();
                var phases = BenchPhasesJson.Of(t);
                return new SoakMove(number, name, from, to, r.Ok, r.Ok ? null : r.Error, r.ResumedOnSource,
                    start, end, t.TotalMs, phases, r.ImageBytes, r.Peers, r.Held, r.Flushed, r.Dropped, r.Unaccounted)
                {
                    ClosingConnectionsLost = r.ClosingConnectionsLost,
                    UdpBytesLostAtFreeze = r.UdpBytesLostAtFreeze,
                };
            }
        }

        /// <summary>What the streams and downloads said once they were ended.</summary>
        internal sealed record SoakEnd(
            string? ClientDone, string? ClientError, string? UdpDone, string? UdpError,
            string ServerLog, string ClientLog, string UdpLog, DownloadOutcome Downloads);

        internal sealed record TcpOutcome(long? Sent, long? Echoed, int Errors, int Resets, List<string> ErrorLines);

        internal sealed record UdpOutcome(long? Sent, long? Received, long? Lost, long? Duplicates, long CountedDropped,
            long Held, string? Error)
        {
            /// <summary>Datagrams that arrived after a later-numbered one: held ones overtaken by fresh ones.</summary>
            public long? Reordered { get; init; }
            /// <summary>The receiver's first missing sequence numbers (200 a second from the sender's start).</summary>
            public string? Missing { get; init; }
        }

        internal sealed record DownloadOutcome(int Count, int Ok, long Bytes, List<string> Failures);

        internal sealed record Percentiles(int N, double? P50, double? P99, double? Max);

        internal sealed record SoakReport(
            int MigrationsAsked, int MigrationsDone, int MigrationsFailed, bool StoppedByTimeBound,
            TcpOutcome Tcp, UdpOutcome Udp, DownloadOutcome Download,
            Percentiles StallMs, Percentiles MigrationMs, double TotalSeconds, List<SoakMove> Migrations)
        {
            /// <summary>Where the agents' and capsules' logs were copied when something failed.</summary>
            public string? LogsKept { get; init; }

            /// <summary>Nothing failed, nothing was lost that was not counted, every download checked out.</summary>
            public bool Clean =>
                MigrationsFailed == 0 && Tcp.Errors == 0 && Udp.Error is null && Udp.Lost <= Udp.CountedDropped
                && Download.Count > 0 && Download.Ok == Download.Count;

            public static SoakReport Build(int asked, bool timeBound, List<SoakMove> moves, SoakEnd end, TimeSpan took)
            {
                var clientGaps = Gaps(end.ClientLog);
                var udpGaps = Gaps(end.UdpLog);
                var withStalls = moves.Select(m => m.Capsule switch
                {
                    Server => WithStall(m, clientGaps),
                    UdpReceiver => WithStall(m, udpGaps),
                    _ => m,
                }).ToList();
                var stalls = withStalls.Where(m => m.Ok && m.StallMs is not null).Select(m => m.StallMs!.Value);
                var times = withStalls.Where(m => m.Ok).Select(m => (double)m.TotalMs);
                return new SoakReport(asked, moves.Count(m => m.Ok), moves.Count(m => !m.Ok), timeBound,
                    TcpOf(end), UdpOf(end, moves), end.Downloads, Of(stalls), Of(times),
                    Math.Round(took.TotalSeconds, 1), withStalls);
            }
        }

        /// <summary>"GAP end=T ms=M" lines: when a gap ended (Unix seconds) and how long it was.</summary>
        static List<(double End, double Ms)> Gaps(string log) =>
            [.. GapRegex().Matches(log).Select(m => (D(m.Groups[1].Value), D(m.Groups[2].Value)))];

        /// <summary>The longest gap that overlaps the migration: it is the stall the move caused.</summary>
        static SoakMove WithStall(SoakMove m, List<(double End, double Ms)> gaps)
        {
            var start = m.Start.ToUnixTimeMilliseconds() / 1000.0;
            var end = m.End.ToUnixTimeMilliseconds() / 1000.0;
            var overlapping = gaps.Where(g => g.End >= start && g.End - g.Ms / 1000 <= end).Select(g => g.Ms).ToList();
            return overlapping.Count > 0
                ? m with { StallMs = overlapping.Max() }
                : m with { StallMs = GapMs, StallBelowThreshold = true };
        }

        static TcpOutcome TcpOf(SoakEnd end)
        {
            var lines = ErrorLines(Server, end.ServerLog).Concat(ErrorLines(StreamClient, end.ClientLog)).ToList();
            long? sent = null;
            long? echoed = null;
            if (end.ClientDone is { } done && StreamDoneRegex().Match(done) is { Success: true } m)
            {
                sent = L(m.Groups[1].Value);
                echoed = L(m.Groups[2].Value);
                if (sent != echoed) lines.Add($"{StreamClient}: sent {sent} bytes but {echoed} came back");
            }
            else if (lines.Count == 0)
                lines.Add($"{StreamClient}: {end.ClientError ?? "no DONE line after the stream was ended"}");
            var resets = lines.Count(IsReset);
            return new TcpOutcome(sent, echoed, lines.Count, resets, lines);
        }

        static IEnumerable<string> ErrorLines(string name, string log) =>
            log.Split('\n')
                .Where(l => l.StartsWith("ERROR", StringComparison.Ordinal))
                .Select(l => $"{name}: {l.Trim()}");

        static bool IsReset(string line) =>
            line.Contains("reset", StringComparison.Ordinal)
            || line.Contains("closed by peer", StringComparison.Ordinal);

        static UdpOutcome UdpOf(SoakEnd end, List<SoakMove> moves)
        {
            var own = moves.Where(m => m.Capsule == UdpReceiver).ToList();
            var dropped = own.Sum(m => m.Dropped);
            var held = own.Sum(m => m.Held);
            if (end.UdpDone is not { } done || UdpDoneRegex().Match(done) is not { Success: true } m)
            {
                var why = $"{UdpReceiver}: {end.UdpError ?? "no DONE line"}";
                return new UdpOutcome(null, null, null, null, dropped, held, why);
            }
            var sent = L(m.Groups[1].Value);
            var received = L(m.Groups[2].Value);
            return new UdpOutcome(sent, received, L(m.Groups[3].Value), L(m.Groups[4].Value), dropped, held, null)
            {
                Reordered = L(m.Groups[5].Value),
                Missing = m.Groups[6].Value,
            };
        }

        /// <summary>Nearest-rank percentiles: every value shown is one that was measured.</summary>
        static Percentiles Of(IEnumerable<double> values)
        {
            var v = values.Order().ToArray();
            if (v.Length == 0) return new Percentiles(0, null, null, null);
            double Rank(double p) => v[Math.Max(0, (int)Math.Ceiling(p * v.Length) - 1)];
            return new Percentiles(v.Length, Rank(0.50), Rank(0.99), v[^1]);
        }

        static double D(string s) => double.Parse(s, CultureInfo.InvariantCulture);
        static long L(string s) => long.Parse(s, CultureInfo.InvariantCulture);

        [GeneratedRegex(@"GAP end=([0-9.]+) ms=([0-9.]+)")]
        private static partial Regex GapRegex();

        [GeneratedRegex(@"^DONE sent=(\d+) echoed=(\d+)")]
        private static partial Regex StreamDoneRegex();

        [GeneratedRegex(@"^DONE sent=(\d+) received=(\d+) lost=(-?\d+) dup=(\d+) reordered=(\d+) missing=(\S+)")]
        private static partial Regex UdpDoneRegex();
    }
}
