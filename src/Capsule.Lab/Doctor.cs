using System.CommandLine;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Spectre.Console;

namespace Capsule.Lab;

/// <summary>`capsule doctor`: what this machine lacks for Capsule, in plain words.</summary>
public static class Doctor
{
    public sealed record Check(string What, bool Ok, string Detail, string Fix);

    public static Command Build()
    {
        var doctor = new Command("doctor", "Check that this machine has what Capsule needs") { CommandTree.JsonOption };
        doctor.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var checks = await RunAsync(ct);
            if (pr.GetValue(CommandTree.JsonOption)) Output.WriteJson(checks, LabJson.Default.ListCheck);
            else
            {
                var t = Output.Table("CHECK", "", "DETAIL");
                foreach (var c in checks)
                    t.AddRow(Markup.Escape(c.What), c.Ok ? "[green]ok[/]" : "[red]missing[/]",
                        Markup.Escape(c.Ok ? c.Detail : $"{c.Detail}. {c.Fix}"));
                AnsiConsole.Write(t);
            }
            var missing = checks.Count(c => !c.Ok);
            Console.WriteLine(missing == 0 ? "everything Capsule needs is here"
                : $"{missing} thing(s) missing; `./capsule doctor` again after fixing");
            return missing == 0 ? 0 : 1;
        }));
        return doctor;
    }

    public static async Task<List<Check>> RunAsync(CancellationToken ct)
    {
        var checks = new List<Check>
        {
            new("running as root", Environment.UserName == "root" || Native.geteuid() == 0,
                $"user {Environment.UserName}", "Run as root: namespaces, TUN and nftables need it"),
            new("/dev/net/tun", File.Exists("/dev/net/tun"), "TUN device for the data plane",
                "Load the tun module (modprobe tun) or create the device node"),
            new("network namespaces", Directory.Exists("/proc/self/ns") && File.Exists("/proc/self/ns/net"),
                "CONFIG_NET_NS", "Use a kernel with network namespaces"),
            new("PID namespaces", File.Exists("/proc/self/ns/pid"), "CONFIG_PID_NS",
                "Use a kernel with PID namespaces"),
        };
        foreach (var (tool, pkg, why) in new[]
                 {
                     ("ip", "iproute2", "namespaces, veth, routes"), ("nft", "nftables", "anti-spoofing rules"),
                     ("nsenter", "util-linux", "entering capsules"), ("unshare", "util-linux", "capsule namespaces"),
                     ("hostname", "hostname", "naming a capsule's UTS namespace"),
                     ("sysctl", "procps", "forwarding settings"), ("iperf3", "iperf3", "tests and benchmarks"),
                     ("curl", "curl", "tests"), ("tcpdump", "tcpdump", "tests (capture)"),
                     ("ping", "iputils-ping", "benchmarks (round-trip time)"),
                 })
        {
            var path = Which(tool);
            checks.Add(new($"{tool} ({why})", path is not null, path ?? "not found", $"apt-get install {pkg}"));
        }
        // In a throw-away network namespace: the probe must not touch the machine's own interfaces.
        var vx = await Cmd.TryRunAsync("unshare",
            ["--net", "ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789"], ct);
        checks.Add(new("kernel VXLAN (benchmark baseline)", vx.Ok, vx.Ok ? "available" : vx.Stderr.Trim(),
            "Use a kernel with CONFIG_VXLAN"));
        checks.Add(await CriuAsync(ct));
        var launcher = Agent.Linux.Launcher.DefaultBinary;
        checks.Add(new("capsule launcher (create --rootfs)", File.Exists(launcher),
            File.Exists(launcher) ? launcher : $"not built at {launcher}",
            "Run scripts/setup.sh (./capsule and ./test.sh run it): it builds native/capsule-launch.c with gcc"));
        checks.Add(PipeMaxSize());
        return checks;
    }

    /// <summary>
    /// `criu check` of the private CRIU that migration uses (4.2.1: Debian 12's 3.17 fails on this kernel).
    /// </summary>
    static async Task<Check> CriuAsync(CancellationToken ct)
    {
        const string what = "CRIU 4.2+ (live migration, suspend)";
        const string fix = "Run scripts/install-criu.sh (./capsule and ./test.sh run it)";
        var criu = Agent.Checkpoint.Criu.DefaultBinary;
        if (!File.Exists(criu)) return new(what, false, $"not installed at {criu}", fix);
        var version = await Cmd.TryRunAsync(criu, ["--version"], ct);
        var check = await Cmd.TryRunAsync(criu, ["check"], ct);
        var said = string.Join(' ', (check.Stdout + check.Stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => !l.Contains("RLIMIT_NOFILE")).TakeLast(2)); // that warning is harmless on this machine kind
        var v = version.Stdout.Split('\n')
            .FirstOrDefault(l => l.StartsWith("Version", StringComparison.Ordinal))?.Trim() ?? "version unknown";
        return new(what, check.Ok, $"{v}; criu check: {said.Trim()}", fix);
    }

    /// <summary>CRIU's lazy pages (`migrate --memory post-copy`) need big pipes: Criu.PostCopyPipeMaxSize.</summary>
    static Check PipeMaxSize()
    {
        const long want = Agent.Checkpoint.Criu.PostCopyPipeMaxSize;
        var size = Agent.Checkpoint.Criu.PipeMaxSize();
        return new("fs.pipe-max-size (post-copy migration)", size >= want, $"{size} (needs {want})",
            $"sysctl -w fs.pipe-max-size={want}, and keep it in /etc/sysctl.d (scripts/setup.sh sets it)");
    }

    static string? Which(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").Split(':')
        .Concat(["/usr/sbin", "/sbin"]).Select(d => Path.Combine(d, tool)).FirstOrDefault(File.Exists);
}
