using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Capsule.Agent.Linux;
using Capsule.Rpc;

namespace Capsule.Lab;

public static partial class Bench
{
    // The measurements every path gets: three iperf3 runs and a ping series against one iperf3 server.
    internal static partial class DataplaneBench
    {
        const int IperfPort = 5201;
        const int PingCount = 20;
        const int ParallelStreams = 4;
        const int UdpPayload = 64; // small packets: the per-packet cost, not the per-byte one
        // /proc/stat counts in USER_HZ, which the kernel ABI fixes at 100 on every architecture we run on.
        const double JiffiesPerSecond = 100;

        /// <summary>
        /// One path's numbers. CPU is machine-wide seconds per Gbit received during the single-stream run.
        /// </summary>
        internal sealed record Measurement(double TcpGbitPerS, double TcpFourStreamsGbitPerS, double UdpKpps,
            double CpuSecondsPerGbit, double RttMedianMs);

        /// <summary>
        /// All measurements from where the client runs to the iperf3 server at <paramref name="address"/>,
        /// one after the other so that they never compete for the two cores.
        /// </summary>
        static async Task<Measurement> Measure(string path, Func<string[], string[]> where, string address,
            int seconds, Action<string> step, CancellationToken ct)
        {
            await WaitForPort(where, address, ct);
            step($"{path}: iperf3 -> {address}: TCP 1 stream, {ParallelStreams} streams, " +
                $"UDP {UdpPayload}-byte datagrams, {seconds} s each; then ping");
            var single = await Iperf(where, address, seconds, [], ct);
            var bytes = Received(single.End).GetProperty("bytes").GetDouble();
            var gbit = bytes * 8 / 1e9;
            var tcp = Received(single.End).GetProperty("bits_per_second").GetDouble() / 1e9;
            var four = await Iperf(where, address, seconds, ["-P", $"{ParallelStreams}"], ct);
            var udp = await Iperf(where, address, seconds,
                ["-u", "-l", $"{UdpPayload}", "-b", "0"], ct);
            return new Measurement(tcp,
                Received(four.End).GetProperty("bits_per_second").GetDouble() / 1e9,
                ReceivedKpps(udp.End),
                single.CpuSeconds / gbit,
                await Ping(where, address, step, ct));
        }

        static JsonElement Received(JsonElement end) => end.GetProperty("sum_received");

        /// <summary>
        /// Datagrams the server received per second, in thousands. In iperf3 3.12's -J output the receiver's
        /// end.sum_received.packets is the highest sequence number seen, so lost datagrams are in it: the
        /// received ones are packets − lost_packets (equal to bytes / payload). end.sum.packets is the sender's
        /// count and would include datagrams dropped on the way.
        /// </summary>
        static double ReceivedKpps(JsonElement end)
        {
            var r = Received(end);
            var received = r.GetProperty("packets").GetDouble() - r.GetProperty("lost_packets").GetDouble();
            return received / r.GetProperty("seconds").GetDouble() / 1e3;
        }

        sealed record IperfRun(JsonElement End, double CpuSeconds);

        /// <summary>
        /// One iperf3 client run of <paramref name="seconds"/>; returns its "end" section and the CPU seconds
        /// the whole machine spent meanwhile (see <see cref="BusyJiffies"/>).
        /// </summary>
        static async Task<IperfRun> Iperf(Func<string[], string[]> where, string address, int seconds,
            string[] extra, CancellationToken ct)
        {
            var cmd = where(["iperf3", "-c", address, "-p", IperfPort.ToString(CultureInfo.InvariantCulture),
                "-t", seconds.ToString(CultureInfo.InvariantCulture), "-J", "--connect-timeout", "3000", .. extra]);
            string error = "";
            for (var attempt = 1; attempt <= 5; attempt++)
            {
                // The server may still be busy resetting after the previous test or the readiness probe.
                if (attempt > 1) await Task.Delay(300, ct);
                var before = BusyJiffies();
                var r = await RunBounded(cmd, TimeSpan.FromSeconds(seconds + 30), ct);
                var cpu = (BusyJiffies() - before) / JiffiesPerSecond;
                try
                {
                    using var doc = JsonDocument.Parse(r.Stdout);
                    if (doc.RootElement.TryGetProperty("error", out var e))
                    {
                        error = e.GetString() ?? "unknown error";
                        continue;
                    }
                    var end = doc.RootElement.GetProperty("end").Clone();
                    var bytes = Received(end).GetProperty("bytes").GetDouble();
                    if (r.Ok && bytes > 0) return new IperfRun(end, cpu);
                    error = $"exit {r.ExitCode}, {bytes} bytes received";
                }
                catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
                {
                    error = $"exit {r.ExitCode}, no usable JSON ({e.Message}): " +
                        $"{Trunc(r.Stderr.Trim() + " " + r.Stdout.Trim())}";
                }
            }
            throw new CommandFailedException($"`{Cmd.Quote(cmd)}` failed: {error}");
        }

        /// <summary>
        /// Jiffies the whole machine has spent busy: user, nice, system, irq, softirq and steal of /proc/stat's
        /// aggregate "cpu" line. Idle and iowait are left out; guest time is already inside user.
        /// </summary>
        static long BusyJiffies()
        {
            var line = File.ReadLines("/proc/stat").First(l => l.StartsWith("cpu ", StringComparison.Ordinal));
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 9) throw new InvalidOperationException($"/proc/stat: unexpected cpu line '{line}'");
            long At(int i) => long.Parse(f[i], CultureInfo.InvariantCulture);
            return At(1) + At(2) + At(3) + At(6) + At(7) + At(8);
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
