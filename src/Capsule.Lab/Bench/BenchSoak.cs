using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Lab;

public static partial class Bench
{
    static Command Soak()
    {
        var migrations = new Option<int>("--migrations")
        {
            Description = "How many live migrations to make, one after another (1-500)",
            DefaultValueFactory = _ => 50,
        };
        var maxMinutes = new Option<int>("--max-minutes")
        {
            Description = "Time bound (1-120): after it no migration starts, and what was done is reported",
            DefaultValueFactory = _ => 10,
        };
        var c = new Command("soak",
            "Many live migrations in a row under a checked TCP stream, a numbered UDP stream and an ordinary "
            + "host's download: errors, losses and the stall's p50/p99")
        {
            migrations, maxMinutes, CommandTree.JsonOption,
        };
        c.SetAction((pr, ct) => CommandTree.Run(() => SoakBench.RunAsync(
            pr.GetValue(migrations), pr.GetValue(maxMinutes), pr.GetValue(CommandTree.JsonOption), ct)));
        return c;
    }

    /// <summary>
    /// `capsule bench soak`: one lab of three hosts and an ordinary host l1 behind the gateway. Three
    /// capsules move: srv (stream.py server), udprx (udpseq.py recv, UDP policy buffer) and web
    /// (python3 -m http.server). Two capsules stay on h1 and feed them: tcpcli (stream.py client, every
    /// byte checked both ways, about 1 MB/s) and udptx (udpseq.py send, 200 numbered datagrams a
    /// second); l1 downloads a random file from web with curl --limit-rate, again and again, each
    /// download's sha256 checked. Then N migrations one after another, srv, udprx, web, srv, ... each
    /// to the next host of h1 → h2 → h3 → h1. The streams run throughout: they are started long
    /// enough for the time bound and ended with SIGUSR1 once the migrations are done, since how long
    /// N migrations take is not known in advance. The stall of a migration is the longest gap its
    /// observer saw that overlaps the migration (tcpcli's gap between echoes for srv, udprx's own gap
    /// between datagrams for udprx); web has no observer but the download's checksum, so only its
    /// migration time is counted. The lab is removed at the end whatever happens.
    /// </summary>
    static partial class SoakBench
    {
        const string LabName = "soak";
        const string OrdinaryHost = "l1";
        const string ClientHost = "h1";
        static readonly string[] Hosts = ["h1", "h2", "h3"];

        const string Server = "srv";
        const string UdpReceiver = "udprx";
        const string Web = "web";
        const string StreamClient = "tcpcli";
        const string UdpSender = "udptx";
        /// <summary>The moving capsules, in the order they take turns.</summary>
        static readonly string[] Movers = [Server, UdpReceiver, Web];
        static readonly string[] Capsules = [.. Movers, StreamClient, UdpSender];

        const int StreamPort = 7100;
        const int UdpPort = 7200;
        const int WebPort = 8080;
        /// <summary>Datagrams a second (512 bytes each): modest, so a full socket buffer explains no loss.</summary>
        const int UdpRate = 200;
        /// <summary>Gaps shorter than this are scheduling noise on a shared machine, not a migration's stall.</summary>
        internal const int GapMs = 50;
        const int BlobMb = 8;
        const string DownloadRate = "2M";
        const int SigUsr1 = 10;
        static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(20);
        static readonly TimeSpan MigrationLimit = TimeSpan.FromSeconds(120);

        /// <summary>What runs during the soak: the capsules that stay put, and l1's downloads.</summary>
        sealed record Workload(CapsuleInfo StreamClient, CapsuleInfo UdpSender, DownloadLoop Downloads);

        public static async Task<int> RunAsync(int migrations, int maxMinutes, bool json, CancellationToken ct)
        {
            if (migrations is < 1 or > 500) throw new UserError("--migrations must be between 1 and 500");
            if (maxMinutes is < 1 or > 120) throw new UserError("--max-minutes must be between 1 and 120");
            var clock = Stopwatch.StartNew();
            // With --json, stdout carries only the JSON; progress goes to stderr.
            Action<string> step = json ? m => Console.Error.WriteLine("• " + m) : Output.Step;
            var session = LabContext.Session(LabName);
            var lab = new LabRunner(session.Paths, step);
            if (lab.Exists)
            {
                step($"removing a previous '{LabName}' lab");
                await lab.DownAsync(ct);
            }
            var www = Directory.CreateTempSubdirectory("capsule-soak-www-");
            try
            {
                step("building a lab of three hosts and one ordinary host behind a gateway");
                await lab.UpAsync(3, ct, legacy: 1);
                var report = await SoakAsync(session, www.FullName, migrations, maxMinutes, clock, step, ct);
                // The lab and its logs go next: a run that found something keeps them for a person to read.
                if (!report.Clean)
                    report = report with { LogsKept = await SoakLogs.KeepAsync(session, report, Capsules, ct) };
                if (json) Output.WriteJson(report, LabJson.Default.SoakReport);
                else Print(report);
                return report.Clean ? 0 : 1;
            }
            finally
            {
                step($"removing the '{LabName}' lab");
                await lab.DownAsync(CancellationToken.None);
                www.Delete(recursive: true);
            }
        }

        static async Task<SoakReport> SoakAsync(Session session, string www, int migrations, int maxMinutes,
            Stopwatch clock, Action<string> step, CancellationToken ct)
        {
            var bound = TimeSpan.FromMinutes(maxMinutes);
            var w = await StartAsync(session, www, StreamSeconds(bound), step, ct);
            try
            {
                var moves = await MigrateAllAsync(session, migrations, clock, bound, step, ct);
                var end = await StopAsync(session, w, step, ct);
                var timeBound = moves.Count < migrations;
                return SoakReport.Build(migrations, timeBound, moves, end, clock.Elapsed);
            }
            finally
            {
                await w.Downloads.DisposeAsync();
            }
        }

        /// <summary>Long enough for the time bound and the set-up before it; SIGUSR1 ends the streams sooner.</summary>
        static int StreamSeconds(TimeSpan bound) => (int)bound.TotalSeconds + 300;

        static async Task<Workload> StartAsync(Session s, string www, int secs, Action<string> step,
            CancellationToken ct)
        {
            var stream = Tool("stream.py");
            var udpseq = Tool("udpseq.py");
            step($"capsules {Server} (TCP stream server) on h2, {UdpReceiver} (UDP receiver) on h3, "
                + $"{Web} (http.server) on h2");
            var srv = await s.CreateAsync(Server, "h2", ["python3", stream, "server", N(StreamPort)], ct);
            // A capsule's UDP policy is buffer unless it is created with drop: its peers hold datagrams.
            var rx = await s.CreateAsync(UdpReceiver, "h3", ["python3", udpseq, "recv", N(UdpPort), N(GapMs)], ct);
            string[] serve = ["python3", "-m", "http.server", N(WebPort), "--directory", www];
            var web = await s.CreateAsync(Web, "h2", serve, ct);
            await MigrateBench.WaitForLog(s, Server, "h2", "LISTENING", StartTimeout, ct);
            await MigrateBench.WaitForLog(s, UdpReceiver, "h3", "LISTENING", StartTimeout, ct);
            var sha = await WriteBlobAsync(www, ct);
            var url = $"http://{web.Locator}:{WebPort}/blob";
            await WaitForWebAsync(s, url, ct);

            step($"capsules {StreamClient} (stream.py client → {srv.Locator}) and {UdpSender} "
                + $"(udpseq.py send → {rx.Locator}, {UdpRate}/s) on {ClientHost}; {OrdinaryHost} downloads {url}");
            var cli = await s.CreateAsync(StreamClient, ClientHost,
                ["python3", stream, "client", srv.Locator, N(StreamPort), N(secs), N(GapMs)], ct);
            var tx = await s.CreateAsync(UdpSender, ClientHost,
                ["python3", udpseq, "send", rx.Locator, N(UdpPort), N(UdpRate), N(secs)], ct);
            var downloads = DownloadLoop.Start(s.Paths.HostNetns(OrdinaryHost), url, DownloadRate, sha, ct);
            await WaitForStartAsync(s, ct);
            return new Workload(cli, tx, downloads);
        }

        /// <summary>Both stream capsules report progress, and the UDP receiver has counted datagrams.</summary>
        static async Task WaitForStartAsync(Session s, CancellationToken ct)
        {
            await MigrateBench.WaitForLog(s, StreamClient, ClientHost, "PROGRESS sent=", StartTimeout, ct);
            await MigrateBench.WaitForLog(s, UdpSender, ClientHost, "PROGRESS sent=", StartTimeout, ct);
            var started = await MigrateBench.WaitForLog(s, UdpReceiver, "h3", "PROGRESS received=", StartTimeout, ct);
            if (started.Line is null) throw new TimeoutException($"{UdpReceiver} reported nothing: {started.Error}");
        }

        /// <summary>A file of random bytes for l1 to download; returns its sha256.</summary>
        static async Task<string> WriteBlobAsync(string www, CancellationToken ct)
        {
            var blob = RandomNumberGenerator.GetBytes(BlobMb << 20);
            await File.WriteAllBytesAsync(Path.Combine(www, "blob"), blob, ct);
            return Convert.ToHexStringLower(SHA256.HashData(blob));
        }

        /// <summary>Waits until l1 gets an answer from the web capsule through the gateway.</summary>
        static async Task WaitForWebAsync(Session s, string url, CancellationToken ct)
        {
            var netns = s.Paths.HostNetns(OrdinaryHost);
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < StartTimeout)
            {
                var r = await Cmd.TryRunAsync("ip",
                    ["netns", "exec", netns, "curl", "-s", "-o", "/dev/null", "-r", "0-0", "-m", "2", url], ct);
                if (r.Ok) return;
                await Task.Delay(200, ct);
            }
            var limit = StartTimeout.TotalSeconds;
            throw new TimeoutException($"{OrdinaryHost} got no answer from {url} within {limit:F0} s");
        }

        static async Task<List<SoakMove>> MigrateAllAsync(Session s, int migrations, Stopwatch clock,
            TimeSpan bound, Action<string> step, CancellationToken ct)
        {
            var moves = new List<SoakMove>();
            for (var i = 0; i < migrations; i++)
            {
                if (clock.Elapsed >= bound)
                {
                    step($"time bound of {bound.TotalMinutes:F0} min reached after {i} migrations; stopping");
                    break;
                }
                var move = await MigrateOneAsync(s, i + 1, Movers[i % Movers.Length], ct);
                moves.Add(move);
                var how = move.Ok ? $"{move.TotalMs} ms, held {move.Held}" : $"FAILED: {move.Error}";
                step($"{move.Number}/{migrations} {move.Capsule} {move.From} → {move.To}: {how}");
            }
            return moves;
        }

        static async Task<SoakMove> MigrateOneAsync(Session s, int number, string name, CancellationToken ct)
        {
            var (rec, agent) = await s.CapsuleAsync(name, ct);
            var to = Hosts[(Array.IndexOf(Hosts, rec.Host) + 1) % Hosts.Length];
            var start = DateTimeOffset.UtcNow;
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(MigrationLimit);
            MigrateResult r;
            try
            {
                r = await MigrateBench.MigrateAsync(agent, name, to, _ => { }, limit.Token);
            }
            catch (RpcException) when (ct.IsCancellationRequested)
            {
                throw new OperationCanceledException(ct);
            }
            catch (RpcException e)
            {
                var late = $"no result within {MigrationLimit.TotalSeconds:F0} s";
                var why = limit.IsCancellationRequested ? late : e.Status.Detail;
                r = new MigrateResult { Ok = false, Error = why, Times = new PhaseTimes() };
            }
            return SoakMove.FromResult(number, name, rec.Host, to, start, DateTimeOffset.UtcNow, r);
        }

        /// <summary>Ends the streams and the downloads, waits for their final counts and reads every log.</summary>
        static async Task<SoakEnd> StopAsync(Session s, Workload w, Action<string> step, CancellationToken ct)
        {
            step("ending the streams (SIGUSR1) and the downloads; waiting for their final counts");
            // The clients stayed on h1 all along: their host PIDs are still theirs to signal.
            Native.kill(w.StreamClient.Pid, SigUsr1);
            Native.kill(w.UdpSender.Pid, SigUsr1);
            var downloads = w.Downloads.StopAsync();
            var cliDone = await MigrateBench.WaitForLog(s, StreamClient, ClientHost, "DONE", Seconds(90), ct);
            await MigrateBench.WaitForLog(s, UdpSender, ClientHost, "DONE", Seconds(30), ct);
            var (rxRec, _) = await s.CapsuleAsync(UdpReceiver, ct);
            var rxDone = await MigrateBench.WaitForLog(s, UdpReceiver, rxRec.Host, "DONE", Seconds(15), ct);
            return new SoakEnd(
                cliDone.Line, cliDone.Error, rxDone.Line, rxDone.Error,
                await LogAsync(s, Server, ct), await LogAsync(s, StreamClient, ct), await LogAsync(s, UdpReceiver, ct),
                await downloads);
        }

        static async Task<string> LogAsync(Session s, string name, CancellationToken ct) =>
            await MigrateBench.TryLogs(s, name, ct) ?? "";

        static string Tool(string name)
        {
            var path = Path.Combine(AppContext.BaseDirectory, "tools", name);
            if (!File.Exists(path)) throw new UserError($"a lab tool is missing: {path}");
            return path;
        }

        static string N(int v) => v.ToString(CultureInfo.InvariantCulture);

        static TimeSpan Seconds(int s) => TimeSpan.FromSeconds(s);
    }
}
