using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// `capsule bench migrate` reads redis-benchmark's worst latency from its log. The samples are the shape
/// redis-benchmark 7.0.15 prints into a file with -l (progress lines ended by \r, a report per test),
/// shortened in the middle. No lab.
/// </summary>
public sealed class RedisBenchmarkOutputTests
{
    static string Report(string test, long requests, string seconds, string max) =>
        $"{new string(' ', 60)}\r====== {test} ======\n" +
        $"  {requests} requests completed in {seconds} seconds\n" +
        "  20 parallel clients\n  3 bytes payload\n  keep alive: 1\n\n" +
        "Latency by percentile distribution:\n0.000% <= 0.047 milliseconds (cumulative count 3)\n\n" +
        "Summary:\n  throughput summary: 35714.29 requests per second\n  latency summary (msec):\n" +
        "          avg       min       p50       p95       p99       max\n" +
        $"        0.457     0.056     0.359     0.775     3.071 {max,9}\n";

    const string Progress = " \rGET: rps=31806.6 (overall: 31234.0) avg_msec=0.431 (overall: 0.440)\r";

    [Fact]
    public void Reads_every_whole_report_in_order()
    {
        var log = Progress + Report("SET", 20000, "0.56", "5.583") + Progress + Report("GET", 20000, "1.42", "691.199")
            + Progress;
        var (reports, error) = RedisBenchmarkOutput.Parse(log);
        Assert.Null(error);
        Assert.Equal([new("SET", 20000, 0.56, 5.583), new RedisReport("GET", 20000, 1.42, 691.199)], reports);
    }

    [Fact]
    public void Leaves_out_a_last_report_still_being_written()
    {
        var whole = Report("SET", 20000, "0.56", "5.583");
        var next = Report("GET", 20000, "1.42", "691.199");
        // Cut inside the values line: "691.1" would otherwise read as a latency.
        var log = whole + next[..(next.Length - 3)];
        var (reports, error) = RedisBenchmarkOutput.Parse(log);
        Assert.Null(error);
        Assert.Equal([new RedisReport("SET", 20000, 0.56, 5.583)], reports);
    }

    [Fact]
    public void A_garbled_report_followed_by_more_is_an_error()
    {
        var garbled = Report("SET", 20000, "0.56", "5.583").Replace("max", "top");
        var (reports, error) = RedisBenchmarkOutput.Parse(garbled + Report("GET", 20000, "1.42", "2.000"));
        Assert.Empty(reports);
        Assert.Contains("SET", error);
    }

    [Fact]
    public void Progress_alone_is_no_report()
    {
        var (reports, error) = RedisBenchmarkOutput.Parse(Progress + Progress);
        Assert.Empty(reports);
        Assert.Null(error);
    }
}
