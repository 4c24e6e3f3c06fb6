using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Protos;

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
            "Throughput, small-packet rate, CPU per Gbit and round-trip time: underlay vs kernel VXLAN " +
            "(and wireguard-go when found) vs the Capsule overlay (AES-GCM, authenticate-only)")
        {
            seconds, CommandTree.JsonOption
        };
        c.SetAction((pr, ct) => CommandTree.Run(() =>
            DataplaneBench.RunAsync(pr.GetValue(seconds), pr.GetValue(CommandTree.JsonOption), ct)));
        return c;
    }

    /// <summary>
    /// `capsule bench dataplane`: one lab of two hosts, and the same measurements (iperf3 TCP with one and four
    /// streams, iperf3 UDP with small datagrams, the machine's CPU time during the single-stream run, median
    /// RTT with ping) over each path between them: the plain underlay, a kernel VXLAN tunnel between the two
    /// host namespaces (the baseline an overlay is measured against), wireguard-go between the same two when a
    /// binary is at hand (another userspace TUN + UDP tunnel), and the Capsule overlay between a capsule on each
    /// host. Everything runs inside the lab's namespaces, and the lab is removed at the end whatever happens.
    /// </summary>
    internal static partial class DataplaneBench
    {
        const string LabName = "bench";
        const string VxlanDev = "vxb0";
        const string VxlanSubnet = "198.19.0"; // also RFC 2544 benchmarking space, like the underlay

        /// <summary>The lab's two host namespaces and their underlay addresses; clients run in h1.</summary>
        sealed record Hosts(string H1, string H2, string Ul1, string Ul2)
        {
            public string[] InH1(params string[] cmd) => ["nsenter", $"--net={Netns.Dir}/{H1}", "--", .. cmd];
        }

        public static async Task<int> RunAsync(int seconds, bool json, CancellationToken ct)
        {
            if (seconds is < 1 or > 60) throw new UserError("--seconds must be between 1 and 60");
            // With --json, stdout carries only the JSON; progress goes to stderr.
            Action<string> step = json ? m => Console.Error.WriteLine("• " + m) : Output.Step;
            var (wireGuardGo, wireGuardSkipped) = FindWireGuardGo();

            var session = LabContext.Session(LabName);
            var lab = new LabRunner(session.Paths, step);
            if (lab.Exists)
            {
                step($"removing a previous '{LabName}' lab");
                await lab.DownAsync(ct);
            }
            step("building a lab of two hosts");
            await lab.UpAsync(2, ct);
            try
            {
                var p = session.Paths;
                var hosts = new Hosts(p.HostNetns("h1"), p.HostNetns("h2"), p.Underlay(1), p.Underlay(2));
                var underlay = await BetweenHosts(hosts, "underlay", hosts.Ul2, seconds, step, ct);
                var vxlan = await Vxlan(hosts, seconds, step, ct);
                WireGuardRow? wireGuard = wireGuardGo is null ? null
                    : await WireGuard(hosts, wireGuardGo, seconds, step, ct);

                // The Capsule overlay: capsule to capsule, wrapped by the agents, AES-GCM (the default)
                var overlay = await Overlay(session, "", seconds, step, ct);
                // The same with authenticate-only agents: the hosts restarted with that setting, which
                // their agents take from the environment they inherit (CAPSULE_AGENT__DATAPLANE).
                var authOnly = await WithAgentSetting(lab, AuthOnlyVariable, "authenticate", "DataPlane=authenticate",
                    step, () => Overlay(session, "a", seconds, step, ct), ct);
                // And AES-GCM with the offloads off (one packet per system call): what the offloads bring.
                var plain = await WithAgentSetting(lab, OffloadsVariable, "false", "Offloads=false", step,
                    () => Overlay(session, "p", seconds, step, ct), ct);
                // And AES-GCM on one lane (one TUN queue, one thread a direction): what the lanes bring.
                var oneLane = await WithAgentSetting(lab, LanesVariable, "1", "Lanes=1", step,
                    () => Overlay(session, "l", seconds, step, ct), ct);
                Report(json, seconds, new Results(underlay, vxlan, wireGuard, wireGuardSkipped, overlay, authOnly,
                    plain, oneLane, Math.Clamp(Environment.ProcessorCount, 1, 64)));
                return 0;
            }
            finally
            {
                step($"removing the '{LabName}' lab");
                await lab.DownAsync(CancellationToken.None);
            }
        }

        const string AuthOnlyVariable = "CAPSULE_AGENT__DATAPLANE";
        const string OffloadsVariable = "CAPSULE_AGENT__OFFLOADS";
        const string LanesVariable = "CAPSULE_AGENT__LANES";

        /// <summary>Restarts the hosts with an agent setting from their environment, then measures.</summary>
        static async Task<Measurement> WithAgentSetting(LabRunner lab, string variable, string value, string shown,
            Action<string> step, Func<Task<Measurement>> measure, CancellationToken ct)
        {
            step($"restarting the hosts with {shown}");
            Environment.SetEnvironmentVariable(variable, value);
            try { await lab.RestartAsync([], ct); }
            finally { Environment.SetEnvironmentVariable(variable, null); }
            return await measure();
        }

        /// <summary>
        /// Measures from h1 to an iperf3 server in h2 bound to <paramref name="address"/>. The server lives in the
        /// lab's namespace, so `lab down` would kill it too; we stop it ourselves as soon as it has served.
        /// </summary>
        static async Task<Measurement> BetweenHosts(Hosts hosts, string path, string address, int seconds,
            Action<string> step, CancellationToken ct)
        {
            var server = StartServer(hosts.H2, address);
            try
            {
                return await Measure(path, hosts.InH1, address, seconds, step, ct);
            }
            finally
            {
                await Stop(server);
            }
        }

        /// <summary>Kernel VXLAN between the two host namespaces, over the underlay.</summary>
        static async Task<Measurement> Vxlan(Hosts hosts, int seconds, Action<string> step, CancellationToken ct)
        {
            var vx1 = $"{VxlanSubnet}.1";
            var vx2 = $"{VxlanSubnet}.2";
            step($"kernel VXLAN: {VxlanDev} (vni 42, udp 4789, mtu 1450) in {hosts.H1} and {hosts.H2}");
            try
            {
                await AddVxlan(hosts.H1, hosts.Ul1, hosts.Ul2, vx1);
                await AddVxlan(hosts.H2, hosts.Ul2, hosts.Ul1, vx2);
                return await BetweenHosts(hosts, "kernel VXLAN", vx2, seconds, step, ct);
            }
            finally
            {
                await Cmd.TryIp(hosts.H1, "link", "del", VxlanDev);
                await Cmd.TryIp(hosts.H2, "link", "del", VxlanDev);
            }
        }

        internal sealed record WireGuardRow(string Version, Measurement Measurement);

        /// <summary>wireguard-go between the two host namespaces over the underlay, torn down in the end.</summary>
        static async Task<WireGuardRow> WireGuard(Hosts hosts, string binary, int seconds, Action<string> step,
            CancellationToken ct)
        {
            await using var tunnel = new WireGuardTunnel(binary);
            var version = await tunnel.VersionAsync(ct);
            step($"wireguard-go {version} ({binary}): a tunnel between {hosts.H1} and {hosts.H2}, " +
                $"udp {WireGuardPort}");
            await tunnel.UpAsync(hosts.H1, hosts.Ul1, hosts.H2, hosts.Ul2, ct);
            var m = await BetweenHosts(hosts, "wireguard-go", WireGuardTunnel.Address(2), seconds, step, ct);
            return new WireGuardRow(version, m);
        }

        /// <summary>Measures between a capsule on h1 and one on h2 (names end in the suffix).</summary>
        static async Task<Measurement> Overlay(Session session, string suffix, int seconds, Action<string> step,
            CancellationToken ct)
        {
            step($"Capsule overlay: capsules srv{suffix} on h2 (iperf3 -s) and cli{suffix} on h1");
            var srv = await Create(session, "srv" + suffix, "h2",
                ["iperf3", "-s", "-p", IperfPort.ToString(CultureInfo.InvariantCulture)], ct);
            var cli = await Create(session, "cli" + suffix, "h1", ["sleep", "infinity"], ct);
            string[] InCli(params string[] cmd) =>
                ["nsenter", "-t", cli.Pid.ToString(CultureInfo.InvariantCulture), "--net", "--", .. cmd];
            var path = suffix switch
            {
                "" => "Capsule overlay",
                "a" => "Capsule overlay, authenticate-only",
                _ => "Capsule overlay, offloads off",
            };
            return await Measure(path, InCli, srv.Locator, seconds, step, ct);
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

        /// <summary>An iperf3 server in a host namespace, bound to one address; it serves test after test.</summary>
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

        static async Task Stop(Process server)
        {
            try
            {
                if (!server.HasExited) server.Kill(entireProcessTree: true);
                await server.WaitForExitAsync(CancellationToken.None);
            }
            catch (InvalidOperationException) { }
            server.Dispose();
        }
    }
}
