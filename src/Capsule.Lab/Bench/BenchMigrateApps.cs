using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Lab;

public static partial class Bench
{
    /// <summary>
    /// The application rows of `capsule bench migrate` (unless --no-apps): unmodified programs, each
    /// server in a capsule on h2 migrated to h3 under its own client in a capsule on h1, once with
    /// stop-and-copy and once with post-copy.
    /// redis: redis-server (no persistence) holding 500,000 keys, under redis-benchmark -c 20 (SET and GET
    /// over those keys, in a loop); measured: the worst request latency redis-benchmark itself reports.
    /// JVM: tools/Server.java (`java Server.java PORT`, the JDK's own HTTP server) under tools/httprr.py, one
    /// keep-alive connection, every answer checked; measured: the client's longest wait between replies.
    /// Both: the migration's phase times, its image, what was held, and the client's TCP counters.
    /// </summary>
    internal static partial class MigrateBench
    {
        const int RedisPort = 6379;
        const int RedisKeys = 500_000;
        const int RedisClients = 20;
        /// <summary>
        /// Requests per test and loop: under a second at the lab's 20-50 k requests/s, so reports come often
        /// and the run ends soon after the migration (a report is all redis-benchmark tells of a test).
        /// </summary>
        const int RedisRequestsPerTest = 20_000;
        /// <summary>redis-benchmark 7 records any latency above 3 s as 3 s (its histogram's ceiling).</summary>
        const double RedisLatencyCeilingMs = 3000;
        /// <summary>The issue's goal: the worst redis latency across a migration.</summary>
        internal const int RedisGoalMs = 300;
        const int JvmPort = 7300;
        /// <summary>The client's cap; SIGUSR1 ends it once the migration is over and replies came after it.</summary>
        const int HttpClientSeconds = 300;
        /// <summary>Replies after the migration before the client is ended: twice its PROGRESS interval.</summary>
        const int RepliesAfter = 1000;
        const int SigUsr1 = 10;
        /// <summary>The JVM compiles Server.java at start: seconds, more on a busy machine.</summary>
        static readonly TimeSpan JvmStartTimeout = TimeSpan.FromSeconds(60);
        static readonly TimeSpan AfterMigrationLimit = TimeSpan.FromSeconds(60);
        /// <summary>What one read of a capsule's log asks for: a log this long may be cut at the front.</summary>
        const int LogReadBytes = 1 << 20;

        /// <summary>What a client saw. Error: why something is missing or the run failed.</summary>
        sealed record ClientOutcome(double? WorstWaitMs, bool Capped, double? BeforeMs, double? RequestsPerSecond,
            long? Requests, string? Error);

        internal static async Task<List<AppRow>> RunAppsAsync(Session session, Action<string> step,
            CancellationToken ct)
        {
            var rows = new List<AppRow>();
            foreach (var postCopy in new[] { false, true })
                rows.Add(await RunRedisAsync(session, postCopy, step, ct));
            foreach (var postCopy in new[] { false, true })
                rows.Add(await RunJvmAsync(session, postCopy, step, ct));
            return rows;
        }

        static string AppMode(string app, bool postCopy) => $"{app}, {(postCopy ? "post-copy" : "stop-and-copy")}";

        static async Task<AppRow> RunRedisAsync(Session s, bool postCopy, Action<string> step, CancellationToken ct)
        {
            var mode = AppMode("redis", postCopy);
            if (MissingProgram("redis-server", "redis-cli", "redis-benchmark") is { } missing)
                return NotRun(mode, "redis", postCopy, $"{missing} is not installed (scripts/setup.sh installs it)");
            var port = RedisPort.ToString(CultureInfo.InvariantCulture);
            var made = new List<string>();
            try
            {
                step($"{mode}: capsule redis on h2 (redis-server, no persistence)");
                var srv = await Create(s, "redis", "h2", ["redis-server", "--port", port, "--bind", "0.0.0.0",
                    "--protected-mode", "no", "--save", "", "--appendonly", "no"], ct);
                made.Add("redis");
                if (await RedisReadyAsync(srv, ct) is { } notReady)
                    return NotRun(mode, "redis", postCopy, notReady);
                step($"{mode}: filling it with {RedisKeys} keys");
                if (await FillRedisAsync(srv, ct) is { } notFilled)
                    return NotRun(mode, "redis", postCopy, notFilled);

                var bench = (string[])["redis-benchmark", "-h", srv.Locator, "-p", port,
                    "-c", N(RedisClients), "-n", N(RedisRequestsPerTest), "-r", N(RedisKeys), "-t", "set,get", "-l"];
                step($"{mode}: capsule rbench on h1 ({string.Join(' ', bench)})");
                var cli = await Create(s, "rbench", "h1", bench, ct);
                made.Add("rbench");
                // A first report: requests flow, and the tests before the migration are its baseline.
                var first = await PollLogAsync(s, cli, t => RedisBenchmarkOutput.Parse(t).Reports.Count >= 1,
                    StartTimeout, "a first redis-benchmark report", ct);
                if (first.Error is { } early)
                    return NotRun(mode, "redis", postCopy, "rbench: " + early);

                var peerBefore = await TcpCounters(cli.Netns, ct);
                var before = RedisBenchmarkOutput.Parse(await ReadLogAsync(s, cli, false, ct)).Reports.Count;
                var result = await MigrateAppAsync(s, "redis", postCopy, mode, step, ct);
                // The test under way when the migration returned, and one wholly after it: every request the
                // migration held is then in a report.
                var atEnd = RedisBenchmarkOutput.Parse(await ReadLogAsync(s, cli, false, ct)).Reports.Count;
                step($"{mode}: waiting for two more redis-benchmark reports");
                var last = await PollLogAsync(s, cli, t => RedisBenchmarkOutput.Parse(t).Reports.Count >= atEnd + 2,
                    AfterMigrationLimit, "two reports after the migration", ct);
                var peerAfter = await TcpCounters(cli.Netns, ct);
                var outcome = RedisOutcome(last.Stdout, before, last.Error);
                return AppRowOf(mode, "redis", postCopy, result, outcome, peerBefore, peerAfter);
            }
            catch (Exception e) when (e is TimeoutException or InvalidOperationException or RpcException)
            {
                return NotRun(mode, "redis", postCopy, e.Message);
            }
            finally
            {
                await RemoveCapsulesAsync(s, made, step);
            }
        }

        static string N(int v) => v.ToString(CultureInfo.InvariantCulture);

        /// <summary>
        /// redis-cli in the redis capsule's own network namespace, at its locator: the fill is set-up, not
        /// measured, and needs no capsule of its own.
        /// </summary>
        static Task<Cmd.Result> RedisCliAsync(CapsuleInfo srv, string[] args, CancellationToken ct) =>
            Cmd.TryRunAsync("nsenter", [$"--net={Netns.Dir}/{srv.Netns}", "--", "redis-cli", "-h", srv.Locator,
                "-p", RedisPort.ToString(CultureInfo.InvariantCulture), .. args], ct);

        /// <summary>Null once redis answers PING; otherwise why not.</summary>
        static async Task<string?> RedisReadyAsync(CapsuleInfo srv, CancellationToken ct)
        {
            var sw = Stopwatch.StartNew();
            while (true)
            {
                var r = await RedisCliAsync(srv, ["ping"], ct);
                if (r.Ok && r.Stdout.Trim() == "PONG") return null;
                if (sw.Elapsed > StartTimeout)
                    return $"redis did not answer PING within {StartTimeout.TotalSeconds:F0} s " +
                        $"({(r.Stdout + " " + r.Stderr).Trim()})";
                await Task.Delay(50, ct);
            }
        }

        /// <summary>
        /// The keys under redis-benchmark's own names (key:%012d), so its SETs and GETs (-r) hit them and the
        /// count stays put; DEBUG POPULATE names them key:N, which the benchmark never touches, and its SETs
        /// would add up to as many again. One server-side script: under a second, and no debug command needed.
        /// </summary>
        static async Task<string?> FillRedisAsync(CapsuleInfo srv, CancellationToken ct)
        {
            const string script = "for i = 0, tonumber(ARGV[1]) - 1 do " +
                "redis.call('SET', string.format('key:%012d', i), 'xxx') end return redis.call('DBSIZE')";
            var r = await RedisCliAsync(srv, ["eval", script, "0", N(RedisKeys)], ct);
            return r.Ok && r.Stdout.Trim() == N(RedisKeys) ? null
                : $"filling redis with {RedisKeys} keys failed: {(r.Stdout + " " + r.Stderr).Trim()}";
        }

        /// <summary>
        /// The worst latency in the reports from <paramref name="before"/> on (those that ended after the
        /// migration began), against the worst before; the rate over every report.
        /// </summary>
        static ClientOutcome RedisOutcome(string stdout, int before, string? waitError)
        {
            var (reports, unreadable) = RedisBenchmarkOutput.Parse(stdout);
            var during = reports.Skip(before).ToList();
            double? worst = during.Count > 0 ? during.Max(r => r.MaxMs) : null;
            double? baseline = before > 0 ? reports.Take(before).Max(r => r.MaxMs) : null;
            var seconds = reports.Sum(r => r.Seconds);
            var requests = reports.Sum(r => r.Requests);
            var error = unreadable ?? waitError
                ?? (during.Count == 0 ? "redis-benchmark printed no report after the migration began" : null);
            return new ClientOutcome(worst, worst >= RedisLatencyCeilingMs, baseline,
                seconds > 0 ? Math.Round(requests / seconds) : null, requests, error);
        }

        static async Task<AppRow> RunJvmAsync(Session s, bool postCopy, Action<string> step, CancellationToken ct)
        {
            var mode = AppMode("JVM", postCopy);
            var server = Path.Combine(AppContext.BaseDirectory, "tools", "Server.java");
            var client = Path.Combine(AppContext.BaseDirectory, "tools", "httprr.py");
            if (MissingProgram("java") is { } missing)
                return NotRun(mode, "jvm", postCopy, $"{missing} is not installed (e.g. apt-get install " +
                    "openjdk-17-jre-headless)");
            if (new[] { server, client }.FirstOrDefault(f => !File.Exists(f)) is { } absent)
                return NotRun(mode, "jvm", postCopy, $"the tool {absent} is missing");
            var port = JvmPort.ToString(CultureInfo.InvariantCulture);
            var made = new List<string>();
            try
            {
                step($"{mode}: capsule jvm on h2 (java Server.java {port})");
                var srv = await Create(s, "jvm", "h2", ["java", server, port], ct);
                made.Add("jvm");
                var listening = await PollLogAsync(s, srv, t => t.Contains("LISTENING", StringComparison.Ordinal),
                    JvmStartTimeout, "LISTENING", ct);
                if (listening.Error is { } down)
                    return NotRun(mode, "jvm", postCopy, "jvm: " + down);

                step($"{mode}: capsule httpcli on h1 (httprr.py {srv.Locator} {port}, one keep-alive connection)");
                var cli = await Create(s, "httpcli", "h1",
                    ["python3", client, srv.Locator, port, N(HttpClientSeconds)], ct);
                made.Add("httpcli");
                // The JVM's first answers are slow (class loading, the JIT): the migration waits for them.
                var first = await PollLogAsync(s, cli, t => LastProgress(t) is not null, JvmStartTimeout,
                    "PROGRESS", ct);
                if (first.Error is { } early)
                    return NotRun(mode, "jvm", postCopy, "httpcli: " + early);

                var peerBefore = await TcpCounters(cli.Netns, ct);
                // PROGRESS carries the longest gap so far: the one read last before the migration is its baseline.
                var baseline = LastProgress(await ReadLogAsync(s, cli, false, ct));
                var result = await MigrateAppAsync(s, "jvm", postCopy, mode, step, ct);
                var atEnd = LastProgress(await ReadLogAsync(s, cli, false, ct))?.Replies ?? 0;
                step($"{mode}: waiting for {RepliesAfter} more replies, then ending the client (SIGUSR1)");
                var after = await PollLogAsync(s, cli, t => LastProgress(t)?.Replies >= atEnd + RepliesAfter,
                    AfterMigrationLimit, $"{RepliesAfter} replies after the migration", ct);
                Native.kill(cli.Pid, SigUsr1);
                var done = await PollLogAsync(s, cli, t => HttpDone(t) is not null, TimeSpan.FromSeconds(15),
                    "DONE", ct);
                var peerAfter = await TcpCounters(cli.Netns, ct);
                var d = HttpDone(done.Stdout);
                var outcome = new ClientOutcome(d?.GapMs, false, baseline?.GapMs,
                    d is { Seconds: > 0 } ? Math.Round(d.Replies / d.Seconds) : null, d?.Replies,
                    after.Error ?? done.Error);
                return AppRowOf(mode, "jvm", postCopy, result, outcome, peerBefore, peerAfter);
            }
            catch (Exception e) when (e is TimeoutException or InvalidOperationException or RpcException)
            {
                return NotRun(mode, "jvm", postCopy, e.Message);
            }
            finally
            {
                await RemoveCapsulesAsync(s, made, step);
            }
        }

        sealed record HttpProgress(long Replies, double GapMs);
        sealed record HttpDoneLine(long Replies, double GapMs, double Seconds);

        static HttpProgress? LastProgress(string stdout) =>
            HttpProgressRegex().Matches(stdout) is { Count: > 0 } all && all[^1] is var m
                ? new HttpProgress(long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
                    Math.Round(double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) * 1000, 1))
                : null;

        static HttpDoneLine? HttpDone(string stdout) =>
            HttpDoneRegex().Match(stdout) is { Success: true } m
                ? new HttpDoneLine(long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
                    Math.Round(double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) * 1000, 1),
                    double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture))
                : null;

        static async Task<MigrateResult> MigrateAppAsync(Session s, string name, bool postCopy, string mode,
            Action<string> step, CancellationToken ct)
        {
            step($"{mode}: migrating {name} h2 -> h3");
            var (_, h2) = await s.AgentAsync("h2", ct);
            MigrateResult result;
            try
            {
                result = await MigrateAsync(h2, name, "h3", step, ct,
                    postCopy ? MemoryMode.PostCopy : MemoryMode.StopAndCopy);
            }
            catch (RpcException e)
            {
                // Refused before anything was touched (the agent's checks): reported, not fatal.
                result = new MigrateResult { Ok = false, Error = e.Status.Detail, Times = new PhaseTimes() };
            }
            step(result.Ok ? $"{mode}: migrated in {result.Times.TotalMs} ms"
                : $"{mode}: migration failed: {result.Error}");
            return result;
        }

        /// <summary>
        /// Polls a capsule's stdout until <paramref name="ready"/> holds for it. Stops early at an ERROR
        /// line, when the capsule's process has ended (saying what its stderr ended with), or after
        /// <paramref name="limit"/>; Error then says which, and Stdout is what was read last.
        /// </summary>
        static async Task<(string Stdout, string? Error)> PollLogAsync(Session s, CapsuleInfo c,
            Func<string, bool> ready, TimeSpan limit, string what, CancellationToken ct)
        {
            var (_, agent) = await s.AgentAsync(c.Host, ct);
            var sw = Stopwatch.StartNew();
            while (true)
            {
                var stdout = await ReadLogAsync(agent, c.Name, false, ct);
                if (ready(stdout)) return (stdout, null);
                if (ErrorLine(stdout) is { } error) return (stdout, error);
                if (stdout.Length >= LogReadBytes)
                    return (stdout, $"the log of {c.Name} outgrew one read ({LogReadBytes} bytes) before {what}");
                var info = await agent.GetAsync(new NameRequest { Name = c.Name }, cancellationToken: ct);
                if (info.Pid == 0)
                {
                    // It may have printed what was awaited just before it ended.
                    stdout = await ReadLogAsync(agent, c.Name, false, ct);
                    if (ready(stdout)) return (stdout, null);
                    var tail = string.Join(' ', (await ReadLogAsync(agent, c.Name, true, ct))
                        .Split('\n', StringSplitOptions.RemoveEmptyEntries).TakeLast(3)).Trim();
                    return (stdout, ErrorLine(stdout) ?? $"{c.Name} ended before {what}" +
                        (tail.Length > 0 ? $" (stderr: {tail})" : ""));
                }
                if (sw.Elapsed > limit) return (stdout, $"no {what} within {limit.TotalSeconds:F0} s");
                await Task.Delay(100, ct);
            }
        }

        static string? ErrorLine(string stdout) =>
            stdout.Split('\n').FirstOrDefault(l => l.StartsWith("ERROR", StringComparison.Ordinal))?.Trim();

        static async Task<string> ReadLogAsync(Session s, CapsuleInfo c, bool stderr, CancellationToken ct)
        {
            var (_, agent) = await s.AgentAsync(c.Host, ct);
            return await ReadLogAsync(agent, c.Name, stderr, ct);
        }

        static async Task<string> ReadLogAsync(HostAgent.HostAgentClient agent, string name, bool stderr,
            CancellationToken ct)
        {
            var r = await agent.LogsAsync(new LogsRequest { Name = name, Stderr = stderr, MaxBytes = LogReadBytes },
                cancellationToken: ct);
            return Encoding.UTF8.GetString(r.Data.Span);
        }

        /// <summary>The first of <paramref name="programs"/> not found on PATH, if any.</summary>
        static string? MissingProgram(params string[] programs)
        {
            var path = (Environment.GetEnvironmentVariable("PATH") ?? "")
                .Split(':', StringSplitOptions.RemoveEmptyEntries);
            return programs.FirstOrDefault(p => !path.Any(d => File.Exists(Path.Combine(d, p))));
        }


        [GeneratedRegex(@"^PROGRESS replies=(\d+) gap=([0-9.]+)", RegexOptions.Multiline)]
        private static partial Regex HttpProgressRegex();

        [GeneratedRegex(@"^DONE replies=(\d+) gap=([0-9.]+) secs=([0-9.]+)", RegexOptions.Multiline)]
        private static partial Regex HttpDoneRegex();
    }
}
