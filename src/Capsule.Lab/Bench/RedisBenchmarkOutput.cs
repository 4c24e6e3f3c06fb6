using System.Globalization;
using System.Text.RegularExpressions;

namespace Capsule.Lab;

/// <summary>One test's report from redis-benchmark: its requests, how long they took, the highest latency.</summary>
internal sealed record RedisReport(string Test, long Requests, double Seconds, double MaxMs);

/// <summary>
/// Reads redis-benchmark 7's output as it prints it into a file (a capsule's log). Of its three forms only the
/// full one serves: --csv is not flushed until the program exits (a killed loop leaves nothing), and -q
/// has no maximum. The full form, with -l, is for every test of every loop:
/// <code>
/// GET: rps=31806.6 (overall: 31234.0) avg_msec=0.431 (overall: 0.440)\r      (every 250 ms, flushed)
/// ====== GET ======
///   20000 requests completed in 0.56 seconds
///   ... (settings, latency by percentile, cumulative distribution)
/// Summary:
///   throughput summary: 35714.29 requests per second
///   latency summary (msec):
///           avg       min       p50       p95       p99       max
///         0.457     0.056     0.359     0.775     3.071     5.583
/// </code>
/// A report is only flushed with the next progress line, so the last one in a log may be cut short: it is
/// left out until it is whole. Latencies above 3 s are recorded as 3 s (its histogram's ceiling).
/// </summary>
internal static partial class RedisBenchmarkOutput
{
    /// <summary>The whole reports, in order; Error when one that is followed by more output cannot be read.</summary>
    public static (List<RedisReport> Reports, string? Error) Parse(string output)
    {
        // Progress lines end in \r, the rest in \n.
        var lines = output.Split('\r', '\n');
        var reports = new List<RedisReport>();
        var i = 0;
        while (i < lines.Length)
        {
            var head = HeadRegex().Match(lines[i]);
            if (!head.Success)
            {
                i++;
                continue;
            }
            var end = i + 1;
            while (end < lines.Length && !HeadRegex().IsMatch(lines[end])) end++;
            var (report, error) = Read(head.Groups[1].Value, lines, i + 1, end);
            if (report is not null) reports.Add(report);
            else if (end < lines.Length) return (reports, $"unreadable redis-benchmark report ({error})");
            // Else the last report is still being written.
            i = end;
        }
        return (reports, null);
    }

    /// <summary>A report from its lines [from, end); null and why when it is not whole.</summary>
    static (RedisReport? Report, string? Error) Read(string test, string[] lines, int from, int end)
    {
        long? requests = null;
        double? seconds = null;
        for (var k = from; k < end; k++)
        {
            if (CompletedRegex().Match(lines[k]) is { Success: true } c)
            {
                requests = long.Parse(c.Groups[1].Value, CultureInfo.InvariantCulture);
                seconds = double.Parse(c.Groups[2].Value, CultureInfo.InvariantCulture);
                continue;
            }
            if (lines[k].Trim() != "latency summary (msec):") continue;
            // The column names, then their values; the values line must have been ended by a newline (a line
            // after it), or its last number may be cut short.
            if (k + 3 >= lines.Length)
                return (null, $"{test}: the latency summary is not complete");
            var names = lines[k + 1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var values = lines[k + 2].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var max = Array.IndexOf(names, "max");
            if (max < 0 || values.Length != names.Length)
                return (null, $"{test}: latency summary '{lines[k + 1].Trim()}' / '{lines[k + 2].Trim()}'");
            if (!double.TryParse(values[max], NumberStyles.Float, CultureInfo.InvariantCulture, out var maxMs))
                return (null, $"{test}: max latency '{values[max]}'");
            if (requests is null || seconds is null)
                return (null, $"{test}: no 'requests completed' line");
            return (new RedisReport(test, requests.Value, seconds.Value, maxMs), null);
        }
        return (null, $"{test}: no latency summary");
    }

    [GeneratedRegex(@"^====== (.+) ======$")]
    private static partial Regex HeadRegex();

    [GeneratedRegex(@"^\s*(\d+) requests completed in ([0-9.]+) seconds")]
    private static partial Regex CompletedRegex();
}
