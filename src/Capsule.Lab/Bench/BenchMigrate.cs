using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Protos;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    static Command Migrate()
    {
        var seconds = new Option<int>("--seconds")
        {
            Description = "Length of each request/response run in seconds (3-60)",
            DefaultValueFactory = _ => 6
        };
        var noWarmup = new Option<bool>("--no-warmup")
        {
            Description = "Skip the unreported warm-up migrations " +
                "(the first modes then also pay the agents' first-use costs)"
        };
        var ballast = new Option<int>("--ballast")
        {
            Description = "MB of memory the server capsule fills first (0-1024), so it is heavier and its freeze " +
                "longer: 200 shows the zero-window pause against TCP's 200 ms minimum RTO",
            DefaultValueFactory = _ => 0
        };
        var noApps = new Option<bool>("--no-apps")
        {
            Description = "Skip the application rows: redis-server with 500,000 keys under redis-benchmark, " +
                "and a JVM HTTP server under a keep-alive client, each migrated stop-and-copy and post-copy"
        };
        var c = new Command("migrate",
            "Live migration under a request/response stream: the stall the peer sees, phase by phase, with and " +
            "without holding, from a capsule peer and from an ordinary host behind the gateway; then redis and a " +
            "JVM server under their own clients, in both memory modes")
        {
            seconds, noWarmup, ballast, noApps, CommandTree.JsonOption
        };
        c.SetAction((pr, ct) => CommandTree.Run(() => MigrateBench.RunAsync(pr.GetValue(seconds),
            !pr.GetValue(noWarmup), pr.GetValue(ballast), !pr.GetValue(noApps), pr.GetValue(CommandTree.JsonOption),
            ct)));
        return c;
    }

    /// <summary>
    /// `capsule bench migrate`: one lab of three hosts and one ordinary host (l1, behind the gateway
    /// gw). For each mode a server capsule on h2 echoes a request/response loop and is migrated
    /// h2 → h3 in the middle of it. The loop is run by a client capsule on h1 (hold-and-flush, the
    /// default, and holding off, for comparison) or by a plain process on l1, whose packets the
    /// gateway holds (with its zero-window pause, the default, and without it). Measured: the
    /// longest gap between replies the client saw (the stall), the migration's phase times, the
    /// packets held, and the client's own TCP counters (retransmission timeouts, retransmitted
    /// segments; l1's namespace for the ordinary peer) over the run, and for the ordinary peer the
    /// zero-window pauses the gateway sent. --ballast MB makes the server heavier, so its freeze
    /// outlasts TCP's 200 ms minimum retransmission timer and the pause's effect shows. The CRIU
    /// floor (dump + restore of the same capsule) is what a migration cannot go below; the stall is
    /// set against it. Then the application rows (BenchMigrateApps.cs). The lab is removed at the end
    /// whatever happens.
    /// First, unless told not to, the same run once unreported for each kind of peer: the first
    /// migration in fresh agents pays one-off costs (JIT of the transfer and restore paths, measured
    /// at 150-250 ms more for transfer + restore; the gateway's hold and pause paths likewise), which
    /// would otherwise all land on whichever mode runs first.
    /// </summary>
    internal static partial class MigrateBench
    {
        const string LabName = "bench";
        const int Port = 7100;
        static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(15);

        const string OrdinaryHost = "l1";
        const string Gateway = LabPaths.GatewayName;

        /// <summary>
        /// Ordinary: the client is a plain process on l1, behind the gateway, rather than a capsule on h1.
        /// </summary>
        sealed record Mode(string Name, bool NoHold, bool Ordinary = false, bool NoPause = false,
            bool PostCopy = false);
        static readonly Mode[] Modes =
        [
            new("hold-and-flush", false),
            new("hold-and-flush, post-copy", false, PostCopy: true),
            new("holding off", true),
            new("ordinary peer, zero-window pause", false, Ordinary: true),
            new("ordinary peer, no pause", false, Ordinary: true, NoPause: true),
        ];

        /// <summary>One mode's numbers. Null where it could not be measured; Error says why.</summary>
        internal sealed record Row(
            string Mode,
            string Peer,
            bool NoHold,
            bool NoPause,
            bool PostCopy,
            bool MigrationOk,
            string? MigrationError,
            double? StallMs,
            long? Replies,
            BenchPhasesJson? PhasesMs,
            long? ImageBytes,
            long? Held,
            long? Flushed,
            long? Dropped,
            long? PeerRtos,
            long? PeerRetransSegs,
            long? GatewayTcpPaused,
            long? GatewayTcpReopened,
            string? ClientError,
            [property: System.Text.Json.Serialization.JsonIgnore] MigrateResult? Result);

        public static async Task<int> RunAsync(int seconds, bool warmup, int ballast, bool apps, bool json,
            CancellationToken ct)
        {
            if (seconds is < 3 or > 60) throw new UserError("--seconds must be between 3 and 60");
            if (ballast is < 0 or > 1024) throw new UserError("--ballast must be between 0 and 1024 (MB)");
            var tool = Path.Combine(AppContext.BaseDirectory, "tools", "stream.py");
            if (!File.Exists(tool)) throw new UserError($"the stream tool is missing: {tool}");
            // With --json, stdout carries only the JSON; progress goes to stderr.
            Action<string> step = json ? m => Console.Error.WriteLine("• " + m) : Output.Step;

            var session = LabContext.Session(LabName);
            var lab = new LabRunner(session.Paths, step);
            if (lab.Exists)
            {
                step($"removing a previous '{LabName}' lab");
                await lab.DownAsync(ct);
            }
            step("building a lab of three hosts and one ordinary host behind a gateway");
            try
            {
                // Inside the try: a lab half made by a failed or cancelled `up` goes too.
                // The comparison modes switch holding or pausing off through the agents' fault points.
                Environment.SetEnvironmentVariable(Agent.Faults.FaultInjector.EnvironmentSwitch, "1");
                await lab.UpAsync(3, ct, legacy: 1);
                if (warmup)
                {
                    foreach (var w in new[] { new Mode("warm-up", false), new Mode("warm-up, post-copy", false,
                        PostCopy: true), new Mode("warm-up, ordinary peer", false, Ordinary: true) })
                    {
                        var r = await RunModeAsync(session, tool, w, 3, ballast, step, ct);
                        if (r.MigrationError is not null || r.ClientError is not null)
                            step($"{w.Name}: {r.MigrationError ?? r.ClientError} (not reported; going on)");
                    }
                }
                var rows = new List<Row>();
                foreach (var mode in Modes)
                    rows.Add(await RunModeAsync(session, tool, mode, seconds, ballast, step, ct));
                var appRows = apps ? await RunAppsAsync(session, step, ct) : null;

                var hold = rows[0].Result;
                long? floor = hold is { Ok: true } ? hold.Times.CriuDumpMs + hold.Times.CriuRestoreMs : null;
                double? Ratio(Row r) => floor is > 0 && r.StallMs is { } s ? s / floor.Value : null;

                if (json)
                {
                    Output.WriteJson(new MigrateBenchJson(seconds, warmup, ballast, rows, floor,
                        "CRIU's own dump and restore times (criu_dump_ms + criu_restore_ms) " +
                            "in the hold-and-flush migration of the same capsule",
                        rows.ToDictionary(r => r.Mode, r => Ratio(r) is { } x ? Math.Round(x, 2) : (double?)null),
                        new MigrateBenchGoal(1.2, 0, RedisGoalMs), appRows), LabJson.Default.MigrateBenchJson);
                }
                else
                {
                    Print(rows, floor, Ratio, seconds, warmup, ballast);
                    if (appRows is not null) PrintApps(appRows);
                }
                return 0;
            }
            finally
            {
                step($"removing the '{LabName}' lab");
                await lab.DownAsync(CancellationToken.None);
            }
        }

        static async Task<Row> RunModeAsync(Session session, string tool, Mode mode, int seconds, int ballast,
            Action<string> step, CancellationToken ct)
        {
            var secs = seconds.ToString(CultureInfo.InvariantCulture);
            var port = Port.ToString(CultureInfo.InvariantCulture);
            var mb = ballast.ToString(CultureInfo.InvariantCulture);
            var made = new List<string>();
            OrdinaryClient? ordinary = null;
            try
            {
                step($"{mode.Name}: capsule srv on h2 (stream.py server {port} {mb})");
                var srv = await Create(session, "srv", "h2", ["python3", tool, "server", port, mb], ct);
                made.Add("srv");
                // Filling the ballast takes a moment per hundred MB.
                await WaitForLog(session, "srv", "h2", "LISTENING",
                    StartTimeout + TimeSpan.FromMilliseconds(50.0 * ballast), ct);

                // The client: a capsule on h1, or a plain process on the ordinary host l1.
                Func<string, TimeSpan, Task<(string? Line, string? Error)>> waitFor;
                string peerNetns;
                if (mode.Ordinary)
                {
                    peerNetns = session.Paths.HostNetns(OrdinaryHost);
                    step($"{mode.Name}: process on {OrdinaryHost} " +
                        $"(ip netns exec {peerNetns} stream.py rr {srv.Locator} {port} {secs})");
                    ordinary = OrdinaryClient.Start(peerNetns, ["python3", tool, "rr", srv.Locator, port, secs]);
                    waitFor = ordinary.WaitFor;
                }
                else
                {
                    step($"{mode.Name}: capsule cli on h1 (stream.py rr {srv.Locator} {port} {secs})");
                    var cli = await Create(session, "cli", "h1", ["python3", tool, "rr", srv.Locator, port, secs], ct);
                    made.Add("cli");
                    peerNetns = cli.Netns;
                    waitFor = (prefix, limit) => WaitForLog(session, "cli", "h1", prefix, limit, ct);
                }
                var started = await waitFor("PROGRESS", StartTimeout);
                if (started.Error is { } early)
                    return Failed(mode, null, "client: " + early);

                var before = await TcpCounters(peerNetns, ct);
                var gwBefore = mode.Ordinary ? await GatewayCounters(session, ct) : null;
                var how = mode.NoHold ? " without holding peers' packets"
                    : mode.NoPause ? " (gateway holds, no zero-window pause)" : "";
                step($"{mode.Name}: migrating srv h2 -> h3{how}");
                MigrateResult result;
                var (_, h2) = await session.AgentAsync("h2", ct);
                try
                {
                    await ArmComparisonAsync(session, mode, ct);
                    result = await MigrateAsync(h2, "srv", "h3", step, ct,
                        mode.PostCopy ? MemoryMode.PostCopy : MemoryMode.StopAndCopy);
                }
                catch (RpcException e)
                {
                    // Refused before anything was touched (the agent's checks): reported, not fatal.
                    result = new MigrateResult { Ok = false, Error = e.Status.Detail, Times = new PhaseTimes() };
                }
                if (result.Ok)
                    step($"{mode.Name}: migrated in {result.Times.TotalMs} ms; waiting for the client's DONE");
                else
                    step($"{mode.Name}: migration failed: {result.Error}");

                var done = await waitFor("DONE", TimeSpan.FromSeconds(seconds + 30));
                var after = await TcpCounters(peerNetns, ct);
                var gwAfter = mode.Ordinary ? await GatewayCounters(session, ct) : null;
                double? stall = null;
                long? replies = null;
                if (done.Line is { } line && DoneRegex().Match(line) is { Success: true } m)
                {
                    replies = long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                    stall = Math.Round(double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) * 1000, 1);
                }
                var clientError = done.Error ?? (done.Line is null ? $"no DONE within {seconds + 30} s"
                    : stall is null ? $"unreadable: {done.Line}" : null);
                // The server's own log too: a mismatch or a reset it saw is as much a failure.
                var srvLog = await TryLogs(session, "srv", ct);
                var srvError = srvLog?.Split('\n').FirstOrDefault(l => l.StartsWith("ERROR", StringComparison.Ordinal));
                if (srvError is not null)
                    clientError = (clientError is null ? "" : clientError + "; ") + "server: " + srvError.Trim();

                var t = result.Times ?? new PhaseTimes();
                return new Row(
                    mode.Name, mode.Ordinary ? "ordinary" : "capsule", mode.NoHold, mode.NoPause, mode.PostCopy,
                    result.Ok,
                    result.Ok ? null : result.Error,
                    stall, replies,
                    result.Times is not null ? BenchPhasesJson.Of(t) : null,
                    result.Ok ? result.ImageBytes : null,
                    result.Held, result.Flushed, result.Dropped,
                    Delta(before, after, "TcpExt.TCPTimeouts"), Delta(before, after, "Tcp.RetransSegs"),
                    Delta(gwBefore, gwAfter, "tcp_paused"), Delta(gwBefore, gwAfter, "tcp_reopened"),
                    clientError, result);
            }
            finally
            {
                // The ordinary client is ours to end (it has normally exited by now).
                ordinary?.Dispose();
                // The capsules go before the next mode, wherever the server is now.
                await RemoveCapsulesAsync(session, made, step);
            }
        }

        /// <summary>Removes capsules wherever they are now; one that cannot be removed goes with the lab.</summary>
        static async Task RemoveCapsulesAsync(Session session, List<string> names, Action<string> step)
        {
            foreach (var name in names)
            {
                try
                {
                    var (_, agent) = await session.CapsuleAsync(name, CancellationToken.None);
                    await agent.RemoveAsync(new NameRequest { Name = name }, deadline: DateTime.UtcNow.AddSeconds(15));
                }
                catch (Exception e) when (e is RpcException or UserError or Dir.DirectoryException)
                {
                    step($"could not remove capsule {name} ({e.Message}); it goes with the lab");
                }
            }
        }

        /// <summary>
        /// The gateway agent's counters (tcp_paused, tcp_reopened, ...); null if they could not be read.
        /// </summary>
        static async Task<Dictionary<string, long>?> GatewayCounters(Session s, CancellationToken ct)
        {
            try
            {
                var (_, gw) = await s.AgentAsync(Gateway, ct);
                var r = await gw.StatsAsync(new Empty(), cancellationToken: ct);
                return r.Counters.GroupBy(c => c.Name).ToDictionary(g => g.Key, g => g.Last().Value);
            }
            catch (Exception e) when (e is RpcException or UserError or Dir.DirectoryException) { return null; }
        }

        static Row Failed(Mode mode, MigrateResult? r, string clientError) =>
            new(mode.Name, mode.Ordinary ? "ordinary" : "capsule", mode.NoHold, mode.NoPause, mode.PostCopy,
                r?.Ok ?? false,
                r is null ? "not attempted" : r.Error,
                null, null, null, null, null, null, null, null, null, null, null, clientError, r);

        static long? Delta(Dictionary<string, long>? before, Dictionary<string, long>? after, string key) =>
            before is not null && after is not null && before.TryGetValue(key, out var b)
                && after.TryGetValue(key, out var a) ? a - b : null;

        /// <summary>A comparison mode: the source skips asking peers to hold, or the gateway skips the pause.</summary>
        static async Task ArmComparisonAsync(Session s, Mode mode, CancellationToken ct)
        {
            if (!mode.NoHold && !mode.NoPause) return;
            var (host, point) = mode.NoHold ? ("h2", Agent.Faults.FaultPoints.NoHold)
                : (Gateway, Agent.Faults.FaultPoints.NoPause);
            var (rec, _) = await s.AgentAsync(host, ct);
            var faults = new FaultProtos.Faults.FaultsClient(Rpc.Channels.For(s.AgentEndpoint(rec)));
            await faults.ArmAsync(new FaultProtos.ArmRequest { Point = point, Action = "skip", Times = 1 },
                cancellationToken: ct);
        }

        internal static async Task<MigrateResult> MigrateAsync(HostAgent.HostAgentClient agent, string name,
            string target, Action<string> step, CancellationToken ct, MemoryMode memory = MemoryMode.StopAndCopy)
        {
            var request = new MigrateRequest
            {
                Name = name, Target = target, HoldPackets = Rpc.ApiDefaults.HoldPackets, Memory = memory,
            };
            using var call = agent.Migrate(request, cancellationToken: ct);
            await foreach (var p in call.ResponseStream.ReadAllAsync(ct))
            {
                if (p.Result is not null) return p.Result;
                step($"  {p.Phase}: {p.Message}");
            }
            return new MigrateResult
            {
                Ok = false, Error = "the source agent ended the migration without a result", Times = new PhaseTimes()
            };
        }

        static Task<CapsuleInfo> Create(Session s, string name, string host, string[] cmd, CancellationToken ct) =>
            s.CreateAsync(name, host, cmd, ct);

        internal static async Task<string?> TryLogs(Session s, string name, CancellationToken ct)
        {
            try
            {
                var (_, agent) = await s.CapsuleAsync(name, ct);
                var r = await agent.LogsAsync(new LogsRequest { Name = name }, cancellationToken: ct);
                return Encoding.UTF8.GetString(r.Data.Span);
            }
            catch (Exception e) when (e is RpcException or UserError) { return null; }
        }

        /// <summary>
        /// Polls a capsule's stdout (through its agent) until a line starts with <paramref name="prefix"/>;
        /// stops early at an ERROR line. Line is null on timeout.
        /// </summary>
        internal static async Task<(string? Line, string? Error)> WaitForLog(Session s, string name, string host,
            string prefix, TimeSpan limit, CancellationToken ct)
        {
            var (_, agent) = await s.AgentAsync(host, ct);
            var sw = Stopwatch.StartNew();
            while (true)
            {
                var r = await agent.LogsAsync(new LogsRequest { Name = name }, cancellationToken: ct);
                var lines = Encoding.UTF8.GetString(r.Data.Span).Split('\n');
                if (lines.FirstOrDefault(l => l.StartsWith("ERROR", StringComparison.Ordinal)) is { } err)
                    return (null, err.Trim());
                if (lines.FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal)) is { } hit)
                    return (hit.Trim(), null);
                if (sw.Elapsed > limit)
                {
                    if (prefix is "LISTENING" or "PROGRESS")
                    {
                        var stderr = await agent.LogsAsync(new LogsRequest { Name = name, Stderr = true },
                            cancellationToken: ct);
                        var tail = string.Join(' ',
                            Encoding.UTF8.GetString(stderr.Data.Span).Split('\n').TakeLast(5)).Trim();
                        throw new TimeoutException(
                            $"capsule {name} did not print {prefix} within {limit.TotalSeconds:F0} s" +
                            $"{(tail.Length > 0 ? $" (stderr: {tail})" : "")}");
                    }
                    return (null, null);
                }
                await Task.Delay(50, ct);
            }
        }

        /// <summary>
        /// The TCP counters of a capsule's network namespace, as "TcpExt.X" and "Tcp.X": /proc/net/netstat
        /// and /proc/net/snmp, each a header line and a value line per group. Read through the named
        /// namespace (same one as `nsenter -t PID --net`), so it still works once the client has exited.
        /// </summary>
        static async Task<Dictionary<string, long>?> TcpCounters(string netns, CancellationToken ct)
        {
            var r = await Cmd.TryRunAsync("nsenter",
                [$"--net={Netns.Dir}/{netns}", "--", "cat", "/proc/net/netstat", "/proc/net/snmp"], ct);
            if (!r.Ok) return null;
            var d = new Dictionary<string, long>();
            var lines = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            for (var i = 0; i + 1 < lines.Length; i++)
            {
                var head = lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                var vals = lines[i + 1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (head.Length < 2 || head[0] != vals[0] || head.Length != vals.Length) continue;
                if (!long.TryParse(vals[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out _))
                    continue; // two headers in a row
                var group = head[0].TrimEnd(':');
                for (var k = 1; k < head.Length; k++)
                    if (long.TryParse(vals[k], NumberStyles.Integer, CultureInfo.InvariantCulture, out var v))
                        d[$"{group}.{head[k]}"] = v;
                i++;
            }
            return d;
        }

        static void Print(List<Row> rows, long? floor, Func<Row, double?> ratio, int seconds, bool warmup, int ballast)
        {
            static string N(long? v) => v?.ToString(CultureInfo.InvariantCulture) ?? "—";
            // Thirteen columns do not fit the 80 a redirected console is given; a file or pipe has no width to keep to.
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 220);
            var t = Output.Table("MODE", "STALL", "SYNC", "FREEZE+DUMP", "TRANSFER", "RESTORE", "FLUSH", "TOTAL",
                "FROZEN", "TAIL", "IMAGE KiB", "HELD/FLUSHED/DROPPED", "PEER RTOs", "PEER RETRANS",
                "GW PAUSED/REOPENED");
            for (var i = 1; i < t.Columns.Count; i++) t.Columns[i].RightAligned();
            t.Columns[0].NoWrap();
            foreach (var r in rows)
            {
                var ok = r.Result is { Ok: true };
                var times = r.Result?.Times;
                // A failed migration still has the times of the phases it went through (and its total,
                // rollback included).
                string P(Func<PhaseTimes, long> f) =>
                    times is not null && (ok || f(times) > 0) ? f(times).ToString(CultureInfo.InvariantCulture) : "—";
                var stall = r.StallMs is { } s ? s.ToString("F0", CultureInfo.InvariantCulture) : "[red]—[/]";
                t.AddRow(
                    ok ? Markup.Escape(r.Mode) : $"[red]{Markup.Escape(r.Mode)}[/]",
                    stall,
                    P(x => x.SyncMs), P(x => x.DumpMs), P(x => x.TransferMs), P(x => x.RestoreMs), P(x => x.FlushMs),
                    P(x => x.TotalMs), P(x => x.FreezeMs),
                    r.PostCopy ? P(x => x.PostCopyTailMs) : "—",
                    ok ? (r.Result!.ImageBytes / 1024.0).ToString("F0", CultureInfo.InvariantCulture) : "—",
                    r.Result is null ? "—" : $"{r.Held}/{r.Flushed}/{r.Dropped}",
                    r.PeerRtos is > 0 ? $"[yellow]{r.PeerRtos}[/]" : N(r.PeerRtos),
                    N(r.PeerRetransSegs),
                    r.Peer == "ordinary" ? $"{N(r.GatewayTcpPaused)}/{N(r.GatewayTcpReopened)}" : "—");
            }
            AnsiConsole.Write(t);
            AnsiConsole.MarkupLine(
                "[grey](times in ms; STALL = longest gap between replies seen by the client, " +
                $"stream.py rr for {seconds} s — a capsule on h1, or for \"ordinary peer\" a plain process on l1 " +
                "behind the gateway — with srv (stream.py server, " +
                $"{(ballast > 0 ? $"{ballast} MB of ballast²" : "no ballast²")}) migrated h2 → h3 during it; " +
                "PEER = the client's TCP counters TCPTimeouts and RetransSegs over the migration " +
                "(its capsule's namespace, or l1's); GW PAUSED/REOPENED = zero-window pauses and reopenings " +
                "the gateway sent; FROZEN = from the dump's start until the capsule ran on h3; TAIL (post-copy) = " +
                "from then until h3 had its last page; " +
                $"{(warmup ? "after one unreported warm-up migration per kind of peer"
                    : "no warm-up: the first modes include the agents' first-use costs")})[/]");
            foreach (var r in rows)
            {
                if (r.MigrationError is { } me)
                    AnsiConsole.MarkupLine($"[red]{Markup.Escape(r.Mode)}: migration failed: {Markup.Escape(me)}[/]");
                if (r.ClientError is { } ce)
                    AnsiConsole.MarkupLine($"[red]{Markup.Escape(r.Mode)}: {Markup.Escape(ce)}[/]");
            }
            AnsiConsole.MarkupLine(floor is { } f
                ? $"CRIU floor (criu dump + criu restore)¹: [bold]{f} ms[/]"
                : "CRIU floor (dump + restore)¹: [red]not measured (the hold-and-flush migration failed)[/]");
            foreach (var r in rows)
            {
                // Phase times vary from run to run; a mode's own dump + restore shows how much of its stall is that.
                var own = !ReferenceEquals(r, rows[0]) && r.Result is { Ok: true } o && r.StallMs is { } s
                    && o.Times.CriuDumpMs + o.Times.CriuRestoreMs is > 0 and var of
                    ? $" [grey](against its own dump + restore of {of} ms: " +
                        $"{(s / of).ToString("F2", CultureInfo.InvariantCulture)}×)[/]"
                    : "";
                AnsiConsole.MarkupLine($"stall / floor, {Markup.Escape(r.Mode)}: " +
                    (ratio(r) is { } x ? $"[bold]{x.ToString("F2", CultureInfo.InvariantCulture)}×[/]" : "—") + own);
            }
            AnsiConsole.MarkupLine("[grey]¹ the time the criu dump and criu restore commands themselves took for " +
                "the same capsule in the hold-and-flush migration: what no migration of it can go below. That dump " +
                "writes the memory to the target's page server as it goes, so it includes the memory's crossing, " +
                "which a dump to a local disk would not. " +
                "Goal: stall ≤ 1.2 × floor and no retransmission timeout at the peer.[/]");
            AnsiConsole.MarkupLine(ballast > 0
                ? $"[grey]² --ballast {ballast}: the server capsule fills {ballast} MB of memory first " +
                    $"(stream.py server {Port} {ballast}), so there is more to dump and move and the freeze is " +
                    "longer. Against TCP's 200 ms minimum retransmission timeout, the ordinary peer's two rows " +
                    "show what the gateway's zero-window pause saves: paused, the peer has nothing to time out; " +
                    "not paused, its retransmission timer can fire while its packets are held.[/]"
                : "[grey]² no ballast (--ballast 0): the server capsule is small and its freeze close to TCP's " +
                    "200 ms minimum retransmission timeout, so the ordinary peer's two rows can differ little; " +
                    "--ballast 200 (MB of memory the server fills first) makes the freeze longer and the difference " +
                    "the zero-window pause makes visible.[/]");
        }

        [GeneratedRegex(@"^DONE replies=(\d+) gap=([0-9.]+)")]
        private static partial Regex DoneRegex();
    }
}
