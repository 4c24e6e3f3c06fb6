using System.Globalization;
using Capsule.Cli;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    // The table (or --json record) `capsule bench dataplane` prints at the end.
    internal static partial class DataplaneBench
    {
        /// <summary>Every path's measurements; the wireguard-go row only when a binary was found.</summary>
        sealed record Results(Measurement Underlay, Measurement Vxlan, WireGuardRow? WireGuard,
            string? WireGuardSkipped, Measurement Overlay, Measurement AuthOnly, Measurement NoOffloads,
            Measurement OneLane, int Lanes);

        /// <summary>Ratios against kernel VXLAN measured in the same run, the baseline an overlay is held to.</summary>
        static OverlayRatios Ratios(Measurement m, Measurement vxlan) =>
            new(Math.Round(m.TcpGbitPerS / vxlan.TcpGbitPerS, 3), Math.Round(m.RttMedianMs / vxlan.RttMedianMs, 3),
                Math.Round(m.TcpFourStreamsGbitPerS / vxlan.TcpFourStreamsGbitPerS, 3));

        static void Report(bool json, int seconds, Results r)
        {
            if (json)
            {
                var wg = r.WireGuard;
                Output.WriteJson(new DataplaneJson(seconds, r.Underlay, r.Vxlan, r.Overlay, Ratios(r.Overlay, r.Vxlan),
                    r.AuthOnly, Ratios(r.AuthOnly, r.Vxlan), wg?.Measurement,
                    wg is null ? null : Ratios(wg.Measurement, r.Vxlan), wg?.Version, r.WireGuardSkipped,
                    r.NoOffloads, Ratios(r.NoOffloads, r.Vxlan),
                    wg is null ? null : Math.Round(r.Overlay.TcpGbitPerS / wg.Measurement.TcpGbitPerS, 3),
                    r.Lanes, r.OneLane, Ratios(r.OneLane, r.Vxlan)),
                    LabJson.Default.DataplaneJson);
                return;
            }
            // Nine columns do not fit the 80 a redirected console is given; a file or pipe has no width to keep to.
            if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 170);
            var t = Output.Table("PATH", "TCP Gbit/s", "4 streams Gbit/s", "UDP kpps", "CPU s/Gbit", "median RTT ms",
                "TCP / VXLAN", "4 streams / VXLAN", "RTT / VXLAN");
            for (var i = 1; i < t.Columns.Count; i++) t.Columns[i].RightAligned();
            t.Columns[0].NoWrap();
            var rows = new List<(string, Measurement)> { ("underlay", r.Underlay), ("kernel VXLAN", r.Vxlan) };
            if (r.WireGuard is { } w) rows.Add(($"wireguard-go {w.Version}", w.Measurement));
            rows.Add(($"Capsule overlay, AES-GCM, {r.Lanes} lanes", r.Overlay));
            rows.Add(("Capsule overlay, authenticate-only", r.AuthOnly));
            rows.Add(("Capsule overlay, AES-GCM, offloads off", r.NoOffloads));
            rows.Add(("Capsule overlay, AES-GCM, 1 lane", r.OneLane));
            foreach (var (name, m) in rows)
            {
                var q = Ratios(m, r.Vxlan);
                t.AddRow(Markup.Escape(name), F(m.TcpGbitPerS, "F2"), F(m.TcpFourStreamsGbitPerS, "F2"),
                    F(m.UdpKpps, "F0"), F(m.CpuSecondsPerGbit, "F2"), F(m.RttMedianMs, "F3"),
                    F(q.Throughput, "F2") + "×", F(q.FourStreamsThroughput, "F2") + "×", F(q.Rtt, "F2") + "×");
            }
            AnsiConsole.Write(t);
            foreach (var note in Footnotes(seconds))
                AnsiConsole.MarkupLine($"[grey]{Markup.Escape(note)}[/]");
            if (r.WireGuard is { } g)
                AnsiConsole.MarkupLine($"[grey]Capsule overlay (AES-GCM) / wireguard-go, single stream: " +
                    $"{F(r.Overlay.TcpGbitPerS / g.Measurement.TcpGbitPerS, "F2")}×[/]");
            if (r.WireGuardSkipped is { } skipped)
                AnsiConsole.MarkupLine($"[grey]wireguard-go row skipped: {Markup.Escape(skipped)}[/]");
        }

        static string[] Footnotes(int seconds) =>
        [
            $"TCP: iperf3 -t {seconds}, one stream and -P {ParallelStreams}, Gbit/s received by the server.",
            $"UDP kpps: thousands of {UdpPayload}-byte datagrams received per second " +
                $"(iperf3 -u -l {UdpPayload} -b 0 -t {seconds}: packets - lost_packets of the receiver).",
            "CPU s/Gbit: during the single-stream TCP run, CPU seconds of the whole machine (/proc/stat cpu: " +
                "user+nice+system+irq+softirq+steal) per Gbit received.",
            "  Machine-wide, not per process: this machine is shared and noisy, so other work counts too.",
            $"RTT = median of ping -c {PingCount} -i 0.05 without the first reply; ratios against kernel VXLAN " +
                "measured in this run.",
        ];

        static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);
    }
}
