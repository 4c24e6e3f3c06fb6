using System.CommandLine;
using System.Diagnostics;
using System.Text.RegularExpressions;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Protos;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Lab;

/// <summary>
/// `capsule demo`: the main job end to end in a throw-away lab of its own: three hosts, a server
/// capsule on h2 and a client capsule on h1 with a checksummed TCP stream between them, the client
/// moved to h3 and then the server to h1 while the stream runs, a summary that proves no byte was
/// lost and nothing was left behind, and the lab removed again.
/// </summary>
public static partial class Demo
{
    const int Port = 7000;
    const int StreamSeconds = 14;

    public static Command Build()
    {
        var keep = new Option<bool>("--keep")
        {
            Description = "Leave the demo lab up afterwards (remove it with `capsule lab down --lab demo`)"
        };
        var demo = new Command("demo", "Run a live demo in a local lab of simulated hosts") { keep };
        demo.SetAction((pr, ct) => CommandTree.Run(() => RunAsync(pr.GetValue(keep), ct)));
        return demo;
    }

    static async Task<int> RunAsync(bool keep, CancellationToken ct)
    {
        var tool = Path.Combine(AppContext.BaseDirectory, "tools", "stream.py");
        if (!File.Exists(tool)) throw new UserError($"the stream tool is missing at {tool}; rebuild Capsule");
        var session = LabContext.Session("demo");
        var lab = new LabRunner(session.Paths, Output.Step);
        if (lab.Exists)
        {
            Output.Step("removing a previous demo lab");
            await lab.DownAsync(ct);
        }
        Heading("1. A lab of three simulated hosts", "network namespaces on one underlay segment, an agent each");
        await lab.UpAsync(3, ct);
        try
        {
            Heading("2. Capsules with a live stream between them",
                $"client on h1 sends ~1 MB/s to server on h2 for {StreamSeconds} s; both check every byte");
            var server = await Create(session, "server", "h2", ["python3", tool, "server", Port.ToString()], ct);
            await WaitForLog(session, "server", "LISTENING", ct);
            var client = await Create(session, "client", "h1",
                ["python3", tool, "client", server.Locator, Port.ToString(), StreamSeconds.ToString()], ct);
            var clock = Stopwatch.StartNew();
            await WaitForLog(session, "client", "PROGRESS sent=", ct);
            await Table(session, ct);
            await WatchStream(session, clock, TimeSpan.FromSeconds(1), ct);

            Heading("3. Live migration of the client, h1 -> h3",
                "the stream keeps running; h2 holds its packets meanwhile");
            var moveClient = await Migrate(session, "client", "h3", ct);
            await WatchStream(session, clock, TimeSpan.FromSeconds(2), ct);

            Heading("4. Live migration of the server, h2 -> h1", "now h3, where the client runs, holds the packets");
            var moveServer = await Migrate(session, "server", "h1", ct);
            var doneEarly = (await Logs(session, "client", ct)).Out.Contains("DONE");

            Heading("5. The stream runs to its end", "the client stops sending and waits for every echo");
            var untilDone = TimeSpan.FromSeconds(StreamSeconds + 30) - clock.Elapsed;
            var log = await WatchStream(session, clock, untilDone, ct, stopAt: ["DONE", "ERROR"]);

            return await Summary(session, log, doneEarly, moveClient, moveServer, ct) ? 0 : 1;
        }
        finally
        {
            if (!keep)
            {
                Heading("7. Cleaning up");
                await lab.DownAsync(CancellationToken.None);
            }
        }
    }

    static void Heading(string title, string? note = null) =>
        AnsiConsole.MarkupLine($"[bold]{Markup.Escape(title)}[/]" +
            (note is null ? "" : $"\n   [grey]{Markup.Escape(note)}[/]"));

    static Task<CapsuleInfo> Create(Session s, string name, string host, string[] cmd, CancellationToken ct) =>
        s.CreateAsync(name, host, cmd, ct);

    static async Task Table(Session s, CancellationToken ct)
    {
        var state = await s.Directory.SnapshotAsync(ct);
        var t = Output.Table("NAME", "LOCATOR", "HOST", "STATE");
        foreach (var c in state.Capsules.Values.OrderBy(c => c.Name))
            t.AddRow(c.Name, c.Locator.ToString(), c.Host, c.State.ToString().ToLowerInvariant());
        AnsiConsole.Write(t);
    }

    /// <summary>A capsule's standard output and error, from the agent of the host it runs on now.</summary>
    static async Task<(string Out, string Err)> Logs(Session s, string name, CancellationToken ct)
    {
        var (_, agent) = await s.CapsuleAsync(name, ct);
        var o = await agent.LogsAsync(new LogsRequest { Name = name }, cancellationToken: ct);
        var e = await agent.LogsAsync(new LogsRequest { Name = name, Stderr = true }, cancellationToken: ct);
        return (o.Data.ToStringUtf8(), e.Data.ToStringUtf8());
    }

    static async Task<string> WaitForLog(Session s, string name, string text, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var (o, e) = await Logs(s, name, ct);
            if (o.Contains(text)) return o;
            if (o.Contains("ERROR") || e.Contains("Traceback"))
                throw new UserError($"capsule {name} failed:\n{(o + e).Trim()}");
            if (sw.Elapsed > TimeSpan.FromSeconds(15))
                throw new TimeoutException(
                    $"'{text}' did not appear in the output of capsule {name} within 15 s:\n{(o + e).Trim()}");
            await Task.Delay(100, ct);
        }
    }

    [GeneratedRegex(@"PROGRESS sent=(\d+) echoed=(\d+)")]
    private static partial Regex ProgressLine();

    [GeneratedRegex(@"DONE sent=(\d+) echoed=(\d+) gap=([\d.]+)")]
    private static partial Regex DoneLine();

    /// <summary>
    /// Shows the client's byte counts for a while (or until its output contains one of
    /// <paramref name="stopAt"/>): one line rewritten in place on a terminal, a line a second
    /// otherwise. Returns the client's output as last read.
    /// </summary>
    static async Task<string> WatchStream(Session s, Stopwatch clock, TimeSpan duration, CancellationToken ct,
        string[]? stopAt = null)
    {
        var live = !Console.IsOutputRedirected;
        var sw = Stopwatch.StartNew();
        var log = "";
        string? shown = null, line = null;
        var lastPrint = TimeSpan.Zero; // the first line after a second, when there is something to see
        while (true)
        {
            try { log = (await Logs(s, "client", ct)).Out; }
            catch (RpcException) { } // the capsule may be between hosts for a moment; try again
            var m = DoneLine().Match(log) is { Success: true } d ? d : ProgressLine().Matches(log).LastOrDefault();
            if (m is not null)
                line = $"   stream at {clock.Elapsed.TotalSeconds,4:F1} s: {Mb(m.Groups[1].Value)} sent, " +
                    $"{Mb(m.Groups[2].Value)} echoed back";
            var stop = stopAt?.Any(log.Contains) == true || sw.Elapsed >= duration;
            if (line is not null && line != shown)
            {
                if (live)
                {
                    Console.Write("\r" + line.PadRight(79));
                    shown = line;
                }
                else if (stop || sw.Elapsed - lastPrint >= TimeSpan.FromSeconds(1))
                {
                    Console.WriteLine(line);
                    shown = line;
                    lastPrint = sw.Elapsed;
                }
            }
            if (stop) break;
            await Task.Delay(250, ct);
        }
        if (live && shown is not null) Console.WriteLine();
        return log;
    }

    static string Mb(string bytes) => $"{long.Parse(bytes) / 1e6,5:F2} MB";

    static readonly Dictionary<string, string> PhaseWords = new()
    {
        ["stage"] = "sending its files ahead while it runs",
        ["sync"] = "peers hold its packets; agreeing on the cut",
        ["dump"] = "freezing and checkpointing its processes (CRIU)",
        ["flush"] = "directory switched; flushing the held packets",
    };

    /// <summary>
    /// Migrates a capsule through its host's agent, showing each phase as it starts and a short result.
    /// </summary>
    static async Task<MigrateResult> Migrate(Session s, string name, string target, CancellationToken ct)
    {
        var (c, agent) = await s.CapsuleAsync(name, ct);
        var sw = Stopwatch.StartNew();
        using var call = agent.Migrate(new MigrateRequest
        {
            Name = c.Name, Target = target, HoldPackets = Rpc.ApiDefaults.HoldPackets
        }, cancellationToken: ct);
        MigrateResult? result = null;
        await foreach (var p in call.ResponseStream.ReadAllAsync(ct))
        {
            if (p.Result is not null)
            {
                result = p.Result;
                break;
            }
            var words = PhaseWords.GetValueOrDefault(p.Phase)
                ?? (p.Phase == "transfer" ? $"sending the image to {target}, restoring it there" : p.Message);
            AnsiConsole.MarkupLine(
                $"   [grey]{sw.ElapsedMilliseconds,5} ms[/]  [bold]{p.Phase,-9}[/] {Markup.Escape(words)}");
        }
        if (result is null) throw new UserError($"the agent ended the migration of {name} without a result");
        var r = result;
        if (r.Ok)
        {
            var t = r.Times;
            AnsiConsole.MarkupLine($"   [green]moved[/] in [bold]{t.TotalMs} ms[/] (sync {t.SyncMs}, " +
                $"dump {t.DumpMs}, transfer {t.TransferMs}, restore {t.RestoreMs}, flush {t.FlushMs})");
            AnsiConsole.MarkupLine($"   image {r.ImageBytes / 1048576.0:F1} MiB; " +
                $"{r.Peers} {(r.Peers == 1 ? "peer" : "peers")} held {r.Held} packets, " +
                $"{r.Flushed} flushed, {r.Dropped} dropped");
            if (r.Unaccounted > 0)
                AnsiConsole.MarkupLine(
                    $"   [yellow]{r.Unaccounted} packets sent before the cut were not seen[/] (TCP resends them)");
        }
        else
        {
            AnsiConsole.MarkupLine($"   [red]failed[/]: {Markup.Escape(r.Error)}");
            AnsiConsole.MarkupLine(r.ResumedOnSource ? $"   {name} was resumed on {r.Host}"
                : $"   {name} may need attention on {r.Host}");
        }
        return r;
    }

    static async Task<bool> Summary(Session s, string clientLog, bool doneEarly, MigrateResult moveClient,
        MigrateResult moveServer, CancellationToken ct)
    {
        Heading("6. Summary");
        var all = true;
        void Check(string what, string detail, bool ok)
        {
            all &= ok;
            AnsiConsole.MarkupLine($"   {(ok ? "[green]ok  [/]" : "[red]FAIL[/]")} {what,-14} {Markup.Escape(detail)}");
        }

        var done = DoneLine().Match(clientLog);
        long sent = -1, echoed = -2;
        if (done.Success)
        {
            sent = long.Parse(done.Groups[1].Value);
            echoed = long.Parse(done.Groups[2].Value);
            Check("bytes", $"{sent:N0} sent, {echoed:N0} echoed back", sent > 0 && sent == echoed);
        }
        else
        {
            var last = clientLog.Split('\n').LastOrDefault(l => l.Length > 0) ?? "(no output)";
            Check("bytes", $"the client did not finish: {last}", false);
        }

        // The server prints how much it received once the client closes the connection.
        var server = ("", "");
        var closed = $"CLOSED after {sent}";
        for (var i = 0; i < 30; i++)
        {
            server = await Logs(s, "server", ct);
            if (server.Item1.Contains("CLOSED") || server.Item1.Contains("ERROR")) break;
            await Task.Delay(100, ct);
        }
        Check("received", server.Item1.Contains(closed) ? $"the server checked all {sent:N0} bytes in order"
            : "the server did not see exactly the bytes sent", server.Item1.Contains(closed));

        var client = (Out: clientLog, Err: "");
        try { client = await Logs(s, "client", ct); } catch (RpcException) { }
        static bool Clean((string Out, string Err) l) =>
            !l.Out.Contains("ERROR") && !l.Err.Contains("ERROR") && !l.Err.Contains("Traceback");
        Check("errors", "no lost, duplicated or reordered byte, no reset", Clean(client) && Clean(server));
        Check("during moves", doneEarly ? "the stream had ended before the server moved"
            : "the stream ran through both migrations", !doneEarly);

        Check("client moved", Moved(moveClient), moveClient.Ok);
        Check("server moved", Moved(moveServer), moveServer.Ok);
        if (done.Success)
            AnsiConsole.MarkupLine($"        {"longest gap",-14} " +
                $"{double.Parse(done.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture) * 1000:F0}" +
                " ms between two echoes");

        var state = await s.Directory.SnapshotAsync(ct);
        string HostOf(string n) => state.Capsules.TryGetValue(n, out var c) ? c.Host : "nowhere";
        var prefix = s.Paths.NetnsPrefix;
        bool Runs(string n, string h) => HostOf(n) == h && Netns.Exists($"{prefix}-{h}-c-{n}");
        Check("running", $"client on {HostOf("client")}, server on {HostOf("server")}",
            Runs("client", "h3") && Runs("server", "h1"));

        var oldClient = $"{prefix}-h1-c-client";
        var oldServer = $"{prefix}-h2-c-server";
        var (_, h1) = await s.AgentAsync("h1", ct);
        var (_, h2) = await s.AgentAsync("h2", ct);
        var onH1 = (await h1.ListAsync(new Empty(), cancellationToken: ct)).Capsules.Any(c => c.Name == "client");
        var onH2 = (await h2.ListAsync(new Empty(), cancellationToken: ct)).Capsules.Any(c => c.Name == "server");
        var leftover = new[] { oldClient, oldServer }.Where(Netns.Exists).ToList();
        var clean = leftover.Count == 0 && !onH1 && !onH2;
        Check("left behind", clean ? $"nothing: {oldClient}, {oldServer} gone"
            : $"{string.Join(", ", leftover)}{(onH1 ? " client on h1" : "")}{(onH2 ? " server on h2" : "")}", clean);

        AnsiConsole.MarkupLine(all
            ? "[green]demo passed[/]: both ends moved mid-stream; every byte arrived once, in order"
            : "[red]demo failed[/]");
        return all;
    }

    static string Moved(MigrateResult r) => r.Ok
        ? $"to {r.Host} in {r.Times.TotalMs} ms, {r.Held} packets held, {r.Dropped} dropped"
        : $"failed: {r.Error}";
}
