using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Protos;
using Capsule.Rpc;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    static Command Dataplane()
    {
        var seconds = new Option<int>("--seconds")
        {
            Description = "Length of each iperf3 run in seconds (1-60)",
            DefaultValueFactory = _ => 5
        };
        var c = new Command("dataplane",
            "Throughput and round-trip time: underlay vs kernel VXLAN vs the Capsule overlay " +
            "(AES-GCM, authenticate-only)")
        {
            seconds, CommandTree.JsonOption
        };
        c.SetAction((pr, ct) => CommandTree.Run(() =>
            DataplaneBench.RunAsync(pr.GetValue(seconds), pr.GetValue(CommandTree.JsonOption), ct)));
        return c;
    }

    /// <summary>
    /// `capsule bench dataplane`: one lab of two hosts, and the same two measurements (single-stream
    /// TCP with iperf3, median RTT with ping) over three paths between them: the plain underlay, a
    /// kernel VXLAN tunnel between the two host namespaces (the baseline an overlay is measured
    /// against), and the Capsule overlay between a capsule on each host. Everything runs inside the
    /// lab's namespaces, and the lab is removed at the end whatever happens.
    /// </summary>
    internal static partial class DataplaneBench
    {
        const string LabName = "bench";
        const int IperfPort = 5201;
        const int PingCount = 20;
        const string VxlanDev = "vxb0";
        const string VxlanSubnet = "198.19.0"; // also RFC 2544 benchmarking space, like the underlay

        internal sealed record Measurement(double TcpGbitPerS, double RttMedianMs);

        public static async Task<int> RunAsync(int seconds, bool json, CancellationToken ct)
        {
            if (seconds is < 1 or > 60) throw new UserError("--seconds must be between 1 and 60");
            // With --json, stdout carries only the JSON; progress goes to stderr.
            Action<string> step = json ? m => Console.Error.WriteLine("• " + m) : Output.Step;

            var session = LabContext.Session(LabName);
            var lab = new LabRunner(session.Paths, step);
            if (lab.Exists)
            {
                step($"removing a previous '{LabName}' lab");
                await lab.DownAsync(ct);
            }
            step("building a lab of two hosts");
            await lab.UpAsync(2, ct);
            var servers = new List<Process>();
            try
            {
                var h1 = session.Paths.HostNetns("h1");
                var h2 = session.Paths.HostNetns("h2");
                var ul1 = session.Paths.Underlay(1);
                var ul2 = session.Paths.Underlay(2);
                string[] InH1(params string[] cmd) => ["nsenter", $"--net={Netns.Dir}/{h1}", "--", .. cmd];

                // (a) the plain underlay
                step($"underlay: iperf3 {ul1} -> {ul2}, {seconds} s");
                servers.Add(StartServer(h2, ul2));
                await WaitForPort(InH1, ul2, ct);
                var underlay = new Measurement(
                    await Iperf(InH1, ul2, seconds, ct),
                    await Ping(InH1, ul2, step, ct));
                await StopAll(servers);

                // (b) kernel VXLAN between the same two host namespaces
                var vx1 = $"{VxlanSubnet}.1";
                var vx2 = $"{VxlanSubnet}.2";
                step($"kernel VXLAN: {VxlanDev} (vni 42, udp 4789, mtu 1450) in {h1} and {h2}");
                await AddVxlan(h1, ul1, ul2, vx1);
                await AddVxlan(h2, ul2, ul1, vx2);
                step($"kernel VXLAN: iperf3 {vx1} -> {vx2}, {seconds} s");
                servers.Add(StartServer(h2, vx2));
                await WaitForPort(InH1, vx2, ct);
                var vxlan = new Measurement(
                    await Iperf(InH1, vx2, seconds, ct),
                    await Ping(InH1, vx2, step, ct));
                await StopAll(servers);
                await Cmd.TryIp(h1, "link", "del", VxlanDev);
                await Cmd.TryIp(h2, "link", "del", VxlanDev);

                // (c) the Capsule overlay: capsule to capsule, wrapped by the agents, AES-GCM (the default)
                var overlay = await Overlay(session, "", seconds, step, ct);
                // (d) the same with authenticate-only agents: the hosts restarted with that setting, which
                // their agents take from the environment they inherit (CAPSULE_AGENT__DATAPLANE).
                step("restarting the hosts with DataPlane=authenticate");
                Environment.SetEnvironmentVariable(AuthOnlyVariable, "authenticate");
                try { await lab.RestartAsync([], ct); }
                finally { Environment.SetEnvironmentVariable(AuthOnlyVariable, null); }
                var authOnly = await Overlay(session, "a", seconds, step, ct);
                Report(json, seconds, underlay, vxlan, overlay, authOnly);
                return 0;
            }
            finally
            {
                await StopAll(servers);
                step($"removing the '{LabName}' lab");
                await lab.DownAsync(CancellationToken.None);
            }
        }

        const string AuthOnlyVariable = "CAPSULE_AGENT__DATAPLANE";

        /// <summary>iperf3 and ping between a capsule on h1 and one on h2 (names end in the suffix).</summary>
        static async Task<Measurement> Overlay(Session session, string suffix, int seconds, Action<string> step,
            CancellationToken ct)
        {
            step($"Capsule overlay: capsules srv{suffix} on h2 (iperf3 -s) and cli{suffix} on h1");
            var srv = await Create(session, "srv" + suffix, "h2",
                ["iperf3", "-s", "-p", IperfPort.ToString(CultureInfo.InvariantCulture)], ct);
            var cli = await Create(session, "cli" + suffix, "h1", ["sleep", "infinity"], ct);
            string[] InCli(params string[] cmd) =>
                ["nsenter", "-t", cli.Pid.ToString(CultureInfo.InvariantCulture), "--net", "--", .. cmd];
            step($"Capsule overlay: iperf3 {cli.Locator} -> {srv.Locator}, {seconds} s");
            await WaitForPort(InCli, srv.Locator, ct);
            var tcp = await Iperf(InCli, srv.Locator, seconds, ct);
            return new Measurement(tcp, await Ping(InCli, srv.Locator, step, ct));
        }

        static OverlayRatios Ratios(Measurement m, Measurement vxlan) =>
            new(Math.Round(m.TcpGbitPerS / vxlan.TcpGbitPerS, 3), Math.Round(m.RttMedianMs / vxlan.RttMedianMs, 3));

        static void Report(bool json, int seconds, Measurement underlay, Measurement vxlan, Measurement overlay,
            Measurement authOnly)
        {
            if (json)
            {
                Output.WriteJson(new DataplaneJson(seconds, underlay, vxlan, overlay, Ratios(overlay, vxlan),
                    authOnly, Ratios(authOnly, vxlan)), LabJson.Default.DataplaneJson);
                return;
            }
            var t = Output.Table("PATH", "TCP Gbit/s", "median RTT ms", "TCP / VXLAN", "RTT / VXLAN");
            for (var i = 1; i <= 4; i++) t.Columns[i].RightAligned();
            foreach (var (name, m) in new[] { ("underlay", underlay), ("kernel VXLAN", vxlan),
                ("Capsule overlay, AES-GCM", overlay), ("Capsule overlay, authenticate-only", authOnly) })
            {
                var r = Ratios(m, vxlan);
                t.AddRow(name, m.TcpGbitPerS.ToString("F2", CultureInfo.InvariantCulture),
                    m.RttMedianMs.ToString("F3", CultureInfo.InvariantCulture),
                    r.Throughput.ToString("F2", CultureInfo.InvariantCulture) + "×",
                    r.Rtt.ToString("F2", CultureInfo.InvariantCulture) + "×");
            }
            AnsiConsole.Write(t);
            AnsiConsole.MarkupLine($"[grey](single-stream TCP, iperf3 -t {seconds}; " +
                $"RTT = median of ping -c {PingCount} -i 0.05 without the first reply; ratios against kernel VXLAN " +
                "measured in this run)[/]");
        }

        static async Task AddVxlan(string netns, string local, string remote, string address)
        {
            await Cmd.Ip(netns, "link", "add", VxlanDev, "type", "vxlan", "id", "42", "local", local, "remote", remote,
                "dstport", "4789", "dev", "ul0");
            await Cmd.Ip(netns, "link", "set", VxlanDev, "mtu", "1450");
            await Cmd.Ip(netns, "addr", "add", address + "/24", "dev", VxlanDev);
            await Cmd.Ip(netns, "link", "set", VxlanDev, "up");
        }

        static Task<CapsuleInfo> Create(Session s, string name, string host, string[] cmd, CancellationToken ct) =>
            s.CreateAsync(name, host, cmd, ct);

        /// <summary>
        /// An iperf3 server inside a host namespace, bound to one address. It lives in the lab's
        /// namespace, so `lab down` would kill it too; we stop it ourselves as soon as it has served.
        /// </summary>
        static Process StartServer(string netns, string bind)
        {
            var psi = new ProcessStartInfo("nsenter")
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var a in new[] { $"--net={Netns.Dir}/{netns}", "--", "iperf3", "-s", "-B", bind, "-p",
                IperfPort.ToString(CultureInfo.InvariantCulture) })
                psi.ArgumentList.Add(a);
            var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start iperf3");
            p.OutputDataReceived += (_, _) => { }; // drained, not shown
            p.ErrorDataReceived += (_, _) => { };
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            return p;
        }

        static async Task StopAll(List<Process> servers)
        {
            foreach (var p in servers)
            {
                try
                {
                    if (!p.HasExited) p.Kill(entireProcessTree: true);
                    await p.WaitForExitAsync(CancellationToken.None);
                }
                catch (InvalidOperationException) { }
                p.Dispose();
            }
            servers.Clear();
        }

        /// <summary>Waits until a TCP connect to the iperf3 port succeeds from where the client will run.</summary>
        static async Task WaitForPort(Func<string[], string[]> where, string address, CancellationToken ct)
        {
            string last = "";
            for (var i = 0; i < 100; i++)
            {
                var cmd = where(["bash", "-c", $"exec 3<>/dev/tcp/{address}/{IperfPort}"]);
                var r = await Cmd.TryRunAsync(cmd[0], cmd[1..], ct);
                if (r.Ok) return;
                last = r.Stderr.Trim();
                await Task.Delay(100, ct);
            }
            throw new TimeoutException(
                $"iperf3 at {address}:{IperfPort} did not accept a connection within 10 s ({last})");
        }

        /// <summary>
        /// Single-stream TCP for <paramref name="seconds"/>; returns Gbit/s as received by the server.
        /// </summary>
        static async Task<double> Iperf(Func<string[], string[]> where, string address, int seconds,
            CancellationToken ct)
        {
            var cmd = where(["iperf3", "-c", address, "-p", IperfPort.ToString(CultureInfo.InvariantCulture),
                "-t", seconds.ToString(CultureInfo.InvariantCulture), "-J", "--connect-timeout", "3000"]);
            string error = "";
            for (var attempt = 1; attempt <= 5; attempt++)
            {
                // The server may still be busy resetting after the readiness probe: retry a few times.
                if (attempt > 1) await Task.Delay(300, ct);
                var r = await RunBounded(cmd, TimeSpan.FromSeconds(seconds + 30), ct);
                try
                {
                    using var doc = JsonDocument.Parse(r.Stdout);
                    if (doc.RootElement.TryGetProperty("error", out var e))
                    {
                        error = e.GetString() ?? "unknown error";
                        continue;
                    }
                    var bps = doc.RootElement.GetProperty("end").GetProperty("sum_received")
                        .GetProperty("bits_per_second").GetDouble();
                    if (r.Ok && bps > 0) return bps / 1e9;
                    error = $"exit {r.ExitCode}, {bps} bit/s";
                }
                catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
                {
                    error = $"exit {r.ExitCode}, no usable JSON ({e.Message}): " +
                        $"{Trunc(r.Stderr.Trim() + " " + r.Stdout.Trim())}";
                }
            }
            throw new CommandFailedException($"`{Cmd.Quote(cmd)}` failed: {error}");
        }

        static readonly Regex PingTime = TimeRegex();

        [GeneratedRegex(@"time=([0-9.]+) ms")]
        private static partial Regex TimeRegex();

        /// <summary>Median RTT in ms of <see cref="PingCount"/> pings, the first (ARP, cold caches) left out.</summary>
        static async Task<double> Ping(Func<string[], string[]> where, string address, Action<string> step,
            CancellationToken ct)
        {
            var cmd = where(["ping", "-n", "-c", PingCount.ToString(CultureInfo.InvariantCulture), "-i", "0.05",
                "-W", "2", address]);
            var r = await RunBounded(cmd, TimeSpan.FromSeconds(30), ct);
            var times = PingTime.Matches(r.Stdout)
                .Select(m => double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
            if (times.Count < 2)
                throw new CommandFailedException($"`{Cmd.Quote(cmd)}` got {times.Count} replies " +
                    $"(exit {r.ExitCode}): {Trunc(r.Stderr.Trim() + " " + r.Stdout.Trim())}");
            if (times.Count < PingCount) step($"ping {address}: only {times.Count} of {PingCount} replies");
            var rest = times.Skip(1).Order().ToList();
            var n = rest.Count;
            return n % 2 == 1 ? rest[n / 2] : (rest[n / 2 - 1] + rest[n / 2]) / 2;
        }

        /// <summary>
        /// Runs a command with a time limit. A process left running on timeout is inside a lab namespace and
        /// goes with the lab.
        /// </summary>
        static async Task<Cmd.Result> RunBounded(string[] cmd, TimeSpan limit, CancellationToken ct)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(limit);
            try
            {
                return await Cmd.TryRunAsync(cmd[0], cmd[1..], cts.Token);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                throw new TimeoutException($"`{Cmd.Quote(cmd)}` did not finish within {limit.TotalSeconds:F0} s");
            }
        }

        static string Trunc(string s) => s.Length <= 400 ? s : s[..400] + "…";
    }
}
