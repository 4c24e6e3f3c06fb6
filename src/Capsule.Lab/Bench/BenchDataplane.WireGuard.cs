using System.Diagnostics;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Rpc;

namespace Capsule.Lab;

public static partial class Bench
{
    internal static partial class DataplaneBench
    {
        /// <summary>Where the bench looks for wireguard-go before PATH: the path of a binary.</summary>
        const string WireGuardGoVariable = "CAPSULE_BENCH_WIREGUARD_GO";
        const string WireGuardSubnet = "198.19.1"; // benchmarking space, beside the VXLAN's 198.19.0
        const int WireGuardPort = 51820;

        /// <summary>
        /// The wireguard-go binary to measure, or why the row is skipped. The bench never fetches one: the
        /// anchor script does that, and the operator points <see cref="WireGuardGoVariable"/> at its result.
        /// </summary>
        static (string? Binary, string? Skipped) FindWireGuardGo()
        {
            var configured = Environment.GetEnvironmentVariable(WireGuardGoVariable);
            if (!string.IsNullOrEmpty(configured) && !File.Exists(configured))
                throw new UserError(
                    $"{WireGuardGoVariable}={configured}: no such file (it names a wireguard-go binary)");
            var binary = string.IsNullOrEmpty(configured) ? OnPath("wireguard-go") : configured;
            if (binary is null)
                return (null, $"no wireguard-go in PATH or {WireGuardGoVariable}; to add the row, set " +
                    $"{WireGuardGoVariable} to a wireguard-go binary: a build from 2023 on has the TUN/UDP offloads " +
                    "(apt-get install wireguard-go gives an older one without them)");
            if (OnPath("wg") is null)
                return (null, "no `wg` in PATH to configure wireguard-go: apt-get install wireguard-tools");
            return (binary, null);
        }

        static string? OnPath(string name) =>
            (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
                .Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);

        /// <summary>
        /// A wireguard-go tunnel between two host namespaces over their underlay addresses, set up the usual
        /// way (wireguard-go's README): one userspace daemon per side, keys from
        /// `wg genkey`, each side's peer the other's underlay address, a /24 on the tunnel devices.
        /// Disposing stops the daemons and deletes the devices, so nothing outlives the run.
        /// </summary>
        sealed class WireGuardTunnel(string binary) : IAsyncDisposable
        {
            readonly List<(string Netns, string Dev, Process Daemon)> sides = [];

            public static string Address(int side) => $"{WireGuardSubnet}.{side}";

            /// <summary>
            /// Device names carry the lab's name: the daemons' UAPI sockets share one /var/run/wireguard, so
            /// they must differ from every other wireguard-go on the machine, and from the lab's own devices.
            /// </summary>
            static string Dev(int side) => $"{LabName}-wg{side}";

            public async Task<string> VersionAsync(CancellationToken ct)
            {
                var r = await Cmd.TryRunAsync(binary, ["--version"], ct);
                var words = r.Stdout.Split('\n')[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return words.Length > 1 ? words[1] : "(unknown version)";
            }

            public async Task UpAsync(string netns1, string underlay1, string netns2, string underlay2,
                CancellationToken ct)
            {
                var key1 = (await Cmd.RunAsync("wg", ["genkey"], ct)).Trim();
                var key2 = (await Cmd.RunAsync("wg", ["genkey"], ct)).Trim();
                await StartDaemon(netns1, Dev(1), ct);
                await StartDaemon(netns2, Dev(2), ct);
                await Configure(netns1, Dev(1), key1, await PublicKey(key2, ct), underlay2, Address(2), ct);
                await Configure(netns2, Dev(2), key2, await PublicKey(key1, ct), underlay1, Address(1), ct);
                foreach (var (netns, dev, side) in new[] { (netns1, Dev(1), 1), (netns2, Dev(2), 2) })
                {
                    await Cmd.Ip(netns, "addr", "add", Address(side) + "/24", "dev", dev);
                    await Cmd.Ip(netns, "link", "set", dev, "up");
                }
            }

            static async Task<string> PublicKey(string privateKey, CancellationToken ct) =>
                (await Cmd.RunAsync("wg", ["pubkey"], ct, privateKey + "\n")).Trim();

            /// <summary>`wg set` with the private key on stdin, so that it never lands in a file.</summary>
            static Task Configure(string netns, string dev, string privateKey, string peerKey, string peerUnderlay,
                string peerAddress, CancellationToken ct) =>
                Cmd.RunAsync("nsenter", [$"--net={Netns.Dir}/{netns}", "--", "wg", "set", dev,
                    "listen-port", $"{WireGuardPort}", "private-key", "/dev/stdin",
                    "peer", peerKey, "endpoint", $"{peerUnderlay}:{WireGuardPort}", "allowed-ips", peerAddress + "/32"],
                    ct, privateKey + "\n");

            /// <summary>
            /// wireguard-go in the foreground (-f) inside the namespace: nsenter execs it, so the process we hold
            /// is the daemon itself. Ready once `wg show` reaches its UAPI socket.
            /// </summary>
            async Task StartDaemon(string netns, string dev, CancellationToken ct)
            {
                var psi = new ProcessStartInfo("nsenter")
                {
                    UseShellExecute = false,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                };
                foreach (var a in new[] { $"--net={Netns.Dir}/{netns}", "--", binary, "-f", dev })
                    psi.ArgumentList.Add(a);
                // wireguard-go refuses to start on Linux without this: it would rather we used the kernel module.
                psi.Environment["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1";
                var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
                var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {binary}");
                sides.Add((netns, dev, p));
                p.OutputDataReceived += (_, e) => { if (e.Data is not null) output.Enqueue(e.Data); };
                p.ErrorDataReceived += (_, e) => { if (e.Data is not null) output.Enqueue(e.Data); };
                p.BeginOutputReadLine();
                p.BeginErrorReadLine();
                for (var i = 0; i < 50; i++)
                {
                    if (p.HasExited) break;
                    var r = await Cmd.TryRunAsync("nsenter",
                        [$"--net={Netns.Dir}/{netns}", "--", "wg", "show", dev], ct);
                    if (r.Ok) return;
                    await Task.Delay(100, ct);
                }
                throw new CommandFailedException($"wireguard-go {dev} in {netns} " +
                    (p.HasExited ? $"exited ({p.ExitCode})" : "did not open its UAPI socket within 5 s") +
                    $": {Trunc(string.Join(" | ", output))}");
            }

            /// <summary>SIGTERM first, so that wireguard-go removes its UAPI socket and device itself.</summary>
            public async ValueTask DisposeAsync()
            {
                foreach (var (netns, dev, p) in sides)
                {
                    try
                    {
                        if (!p.HasExited) Native.kill(p.Id, SigTerm);
                        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(3));
                        try { await p.WaitForExitAsync(grace.Token); }
                        catch (OperationCanceledException) { p.Kill(); await p.WaitForExitAsync(); }
                    }
                    catch (InvalidOperationException) { } // never started or already reaped
                    p.Dispose();
                    await Cmd.TryIp(netns, "link", "del", dev);
                    var socket = $"/var/run/wireguard/{dev}.sock"; // left behind only if it had to be killed
                    if (File.Exists(socket)) File.Delete(socket);
                }
                sides.Clear();
            }

            const int SigTerm = 15;
        }
    }
}
