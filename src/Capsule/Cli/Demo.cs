using System.CommandLine;
using System.Diagnostics;
using Capsule.Lab;
using Capsule.Linux;
using Capsule.Protos;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>
/// `capsule demo`: the main job end to end in a throw-away lab of its own: two hosts, a web
/// server capsule on h2, a client capsule on h1 that fetches a file through the overlay, the
/// checksums compared, the data-plane counters shown, and the lab removed again.
/// </summary>
internal static class Demo
{
    public static Command Build()
    {
        var keep = new Option<bool>("--keep") { Description = "Leave the demo lab up afterwards (remove it with `capsule lab down --lab demo`)" };
        var demo = new Command("demo", "Run a live demo in a local lab of simulated hosts") { keep };
        demo.SetAction((pr, ct) => CommandTree.Run(() => RunAsync(pr.GetValue(keep), ct)));
        return demo;
    }

    static async Task<int> RunAsync(bool keep, CancellationToken ct)
    {
        var session = new Session("demo");
        var lab = new LabRunner(session.Paths, Output.Step);
        if (lab.Exists) { Output.Step("removing a previous demo lab"); await lab.DownAsync(ct); }
        AnsiConsole.MarkupLine("[bold]1. A lab of two simulated hosts[/] (network namespaces on one underlay segment, an agent each)");
        await lab.UpAsync(2, ct);
        try
        {
            var www = Path.Combine(session.Paths.StateDir, "www");
            Directory.CreateDirectory(www);
            var blob = new byte[20 << 20];
            Random.Shared.NextBytes(blob);
            await File.WriteAllBytesAsync(Path.Combine(www, "blob"), blob, ct);
            var sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(blob));

            AnsiConsole.MarkupLine("[bold]2. Capsules[/]: a web server on h2, a client on h1, each with a locator from the directory");
            var web = await Create(session, "web", "h2", ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", www], ct);
            var client = await Create(session, "client", "h1", ["sleep", "infinity"], ct);
            await Table(session, ct);

            AnsiConsole.MarkupLine($"[bold]3. Traffic through the overlay[/]: client ({client.Locator}) fetches 20 MiB from web ({web.Locator}); h1 wraps each packet for h2");
            await WaitForPort(client.Pid, web.Locator, 8080, ct);
            var sw = Stopwatch.StartNew();
            var r = await Cmd.TryRunAsync("nsenter", ["-t", client.Pid.ToString(), "--net", "--", "sh", "-c", $"curl -sS --fail http://{web.Locator}:8080/blob | sha256sum"], ct);
            sw.Stop();
            var got = r.Stdout.Split(' ')[0];
            var ok = r.Ok && got == sha;
            AnsiConsole.MarkupLine($"   sha256 sent     {sha}");
            AnsiConsole.MarkupLine($"   sha256 received {(ok ? "[green]" : "[red]")}{(got.Length > 0 ? got : Markup.Escape(r.Stderr.Trim()))}[/]  in {sw.ElapsedMilliseconds} ms ({20 * 8 / sw.Elapsed.TotalSeconds:F0} Mbit/s)");

            AnsiConsole.MarkupLine("[bold]4. The data plane's counters[/] (nothing dropped on the way)");
            foreach (var h in new[] { "h1", "h2" })
            {
                var (_, agent) = await session.AgentAsync(h, ct);
                var s = await agent.StatsAsync(new Empty(), cancellationToken: ct);
                var c = s.Counters.ToDictionary(x => x.Name, x => x.Value);
                var drops = s.Drops.Sum(x => x.Value);
                AnsiConsole.MarkupLine($"   {h}: sent {c["egress_packets"]:N0} packets in {c["egress_batches"]:N0} batches, received {c["ingress_packets"]:N0}, dropped {drops}");
            }
            AnsiConsole.MarkupLine(ok ? "[green]demo passed[/]: the file crossed the overlay intact" : "[red]demo failed[/]");
            AnsiConsole.MarkupLine("[grey](live migration of these capsules comes with `capsule migrate`)[/]");
            return ok ? 0 : 1;
        }
        finally
        {
            if (!keep) { AnsiConsole.MarkupLine("[bold]5. Cleaning up[/]"); await lab.DownAsync(CancellationToken.None); }
        }
    }

    static async Task<CapsuleInfo> Create(Session s, string name, string host, string[] cmd, CancellationToken ct)
    {
        var (_, agent) = await s.AgentAsync(host, ct);
        var req = new CreateRequest { Name = name };
        req.Command.AddRange(cmd);
        return await agent.CreateAsync(req, cancellationToken: ct);
    }

    static async Task Table(Session s, CancellationToken ct)
    {
        var state = await s.Directory.SnapshotAsync(ct);
        var t = Output.Table("NAME", "LOCATOR", "HOST", "STATE");
        foreach (var c in state.Capsules.Values) t.AddRow(c.Name, c.Locator.ToString(), c.Host, c.State.ToString().ToLowerInvariant());
        AnsiConsole.Write(t);
    }

    /// <summary>Waits until a TCP connect from inside the capsule succeeds (the server may still be starting).</summary>
    public static async Task WaitForPort(int pid, string address, int port, CancellationToken ct)
    {
        for (var i = 0; i < 100; i++)
        {
            var r = await Cmd.TryRunAsync("nsenter", ["-t", pid.ToString(), "--net", "--", "bash", "-c", $"exec 3<>/dev/tcp/{address}/{port}"], ct);
            if (r.Ok) return;
            await Task.Delay(100, ct);
        }
        throw new TimeoutException($"{address}:{port} did not accept a connection within 10 s");
    }
}
