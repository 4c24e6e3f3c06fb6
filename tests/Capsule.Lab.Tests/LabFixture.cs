using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>Runs the real `capsule` binary, as a user would.</summary>
public static class Cli
{
    /// <summary>
    /// The native binary scripts/setup.sh publishes (the one `./capsule` runs), not the JIT build beside
    /// these tests: the tests see what people see, start-up speed included.
    /// </summary>
    public static string Binary
    {
        get
        {
            var path = typeof(Cli).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
                .Single(a => a.Key == "CapsuleBinary").Value!;
            return File.Exists(path) ? path
                : throw new FileNotFoundException($"no native capsule binary at {path}: run scripts/setup.sh");
        }
    }

    public sealed record Result(int Code, string Out, string Err)
    {
        public Result Ok()
        {
            Assert.True(Code == 0, $"exit {Code}\nstdout: {Out}\nstderr: {Err}");
            return this;
        }
    }

    public static Task<Result> Run(string lab, params string[] args) => Exec(Binary, ["--lab", lab, .. args]);

    public static async Task<Result> Exec(string file, IEnumerable<string> args, int timeoutSeconds = 180,
        IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(timeoutSeconds));
        var o = p.StandardOutput.ReadToEndAsync(cts.Token);
        var e = p.StandardError.ReadToEndAsync(cts.Token);
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} ran over {timeoutSeconds} s");
        }
        return new Result(p.ExitCode, await o, await e);
    }
}

/// <summary>
/// A lab of its own for a test class: named with a random prefix so two labs never collide, and
/// always torn down, also when tests fail.
/// </summary>
public class LabFixture : IAsyncLifetime
{
    public string Name { get; } = "t" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())[..6];
    public int Hosts { get; init; } = 3;

    /// <summary>Ordinary hosts (l1..) behind the gateway.</summary>
    public int Legacy { get; init; } = 1;

    /// <summary>More `lab up` options (the directory to run, for one).</summary>
    protected virtual string[] UpOptions => [];

    /// <summary>
    /// Environment of `lab up`, which its daemons inherit: agent settings as CAPSULE_AGENT__KEY (a short key
    /// rotation, for one).
    /// </summary>
    protected virtual IReadOnlyDictionary<string, string>? DaemonEnvironment => null;

    public async Task InitializeAsync() =>
        await Cli.Exec(Cli.Binary,
                ["--lab", Name, "lab", "up", "--hosts", Hosts.ToString(), "--legacy", Legacy.ToString(), .. UpOptions],
                env: DaemonEnvironment)
            .ContinueWith(t => t.Result.Ok());

    public async Task DisposeAsync() => await Cli.Run(Name, "lab", "down");

    public Task<Cli.Result> Run(params string[] args) => Cli.Run(Name, args);

    public Task<(string Locator, int Pid)> Create(string name, string host, params string[] command) =>
        CreateWith(name, host, [], command);

    public async Task<(string Locator, int Pid)> CreateWith(string name, string host, string[] options,
        params string[] command)
    {
        var r = (await Run(["create", name, "--host", host, "--json", .. options, "--", .. command])).Ok();
        using var doc = JsonDocument.Parse(r.Out);
        return (doc.RootElement.GetProperty("locator").GetString()!, doc.RootElement.GetProperty("pid").GetInt32());
    }

    /// <summary>Runs a command in a capsule's namespaces via `capsule exec`.</summary>
    public Task<Cli.Result> InCapsule(string capsule, params string[] command) =>
        Run(["exec", capsule, "--", .. command]);

    /// <summary>Runs a command on a simulated host via `capsule lab exec`.</summary>
    public Task<Cli.Result> OnHost(string host, params string[] command) =>
        Run(["lab", "exec", host, "--", .. command]);

    public async Task<Dictionary<string, long>> Stats(string host)
    {
        var r = (await Run("stats", host, "--json")).Ok();
        using var doc = JsonDocument.Parse(r.Out);
        var d = new Dictionary<string, long>();
        foreach (var p in doc.RootElement.GetProperty("counters").EnumerateObject()) d[p.Name] = p.Value.GetInt64();
        foreach (var p in doc.RootElement.GetProperty("drops").EnumerateObject())
            d["drop_" + p.Name] = p.Value.GetInt64();
        return d;
    }

    public static string Tool(string name) => Path.Combine(AppContext.BaseDirectory, "tools", name);

    /// <summary>Migrates a capsule and returns the result as JSON (the command's --json output).</summary>
    public async Task<JsonElement> Migrate(string capsule, string to, params string[] extra)
    {
        var r = await Run(["migrate", capsule, "--to", to, "--json", .. extra]);
        Assert.True(r.Out.TrimStart().StartsWith('{'), $"migrate printed no result (exit {r.Code}): {r.Err}");
        return JsonDocument.Parse(r.Out).RootElement.Clone();
    }

    public async Task<string> Logs(string capsule, bool stderr = false) =>
        (await Run(stderr ? ["logs", capsule, "--stderr"] : ["logs", capsule])).Ok().Out;

    /// <summary>Waits until a capsule's standard output (or error) contains <paramref name="text"/>.</summary>
    public async Task<string> WaitForLog(string capsule, string text, int seconds = 60, bool stderr = false)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        string log;
        do
        {
            log = await Logs(capsule, stderr);
            if (log.Contains(text)) return log;
            Assert.DoesNotContain("ERROR", log);
            await Task.Delay(200);
        } while (DateTime.UtcNow < until);
        Assert.Fail($"'{text}' never appeared in the output of {capsule}:\n{log}");
        return log;
    }

    /// <summary>
    /// Polls <paramref name="done"/> until it holds, for at most <paramref name="seconds"/>; then fails
    /// naming <paramref name="what"/>. The short pause is only the poll interval: each test waits for a
    /// condition, never for a fixed time.
    /// </summary>
    public static async Task Until(Func<Task<bool>> done, string what, int seconds = 60)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (!await done())
        {
            if (DateTime.UtcNow > until) Assert.Fail($"waited {seconds} s in vain for {what}");
            await Task.Delay(100);
        }
    }

    /// <summary>
    /// Datagrams of an iperf3 UDP run (its -J output) that never arrived, and how many were sent. Gaps: those
    /// missing before the last datagram its server saw (numbered sum_received.packets), iperf3's lost_packets.
    /// Tail: those sent after that one. iperf3 (before 3.18) stops reading datagrams the moment the client's
    /// end of test arrives, which follows the last datagram at once (esnet/iperf#1865): the few still queued
    /// then make a tail of a run that lost nothing, more often when they travel batched. A datagram a move
    /// held and never delivered is a gap, since thousands more arrive after the move.
    /// </summary>
    public static (long Gaps, long Tail, long Sent) IperfUdpLoss(JsonElement iperf)
    {
        var end = iperf.GetProperty("end");
        var sent = end.GetProperty("sum_sent").GetProperty("packets").GetInt64();
        var received = end.GetProperty("sum_received");
        var last = received.GetProperty("packets").GetInt64();
        return (received.GetProperty("lost_packets").GetInt64(), sent - last, sent);
    }

    /// <summary>The bytes a stream.py client has had echoed so far (its last PROGRESS or DONE line), or 0.</summary>
    public static long Echoed(string log) =>
        log.Split('\n').Where(l => l.StartsWith("PROGRESS ") || l.StartsWith("DONE ")).Select(l => l.Split(' '))
            .Select(w => long.Parse(w.Single(x => x.StartsWith("echoed="))[7..])).LastOrDefault();

    /// <summary>
    /// Waits until a stream.py client in <paramref name="capsule"/> has had <paramref name="bytes"/> more
    /// bytes echoed than when called: the stream demonstrably moves where it runs now.
    /// </summary>
    public async Task WaitForProgress(string capsule, long bytes, int seconds = 60)
    {
        var from = Echoed(await Logs(capsule));
        await Until(async () =>
        {
            var log = await Logs(capsule);
            Assert.DoesNotContain("ERROR", log);
            return Echoed(log) >= from + bytes;
        }, $"{capsule}'s stream to echo {bytes} more bytes than {from}", seconds);
    }

    /// <summary>A counter of the capsule's eth0 (rx_bytes, rx_packets, tx_bytes, tx_packets), as counted.</summary>
    /// <remarks>
    /// From /proc/net/dev, which follows the reader's network namespace; /sys/class/net does not (it shows
    /// the namespace of whoever mounted that sysfs, not the capsule's).
    /// </remarks>
    public async Task<long> NetCounter(string capsule, string counter)
    {
        var dev = (await InCapsule(capsule, "cat", "/proc/net/dev")).Ok().Out;
        var fields = dev.Split('\n').Single(l => l.TrimStart().StartsWith("eth0:")).Split(':')[1]
            .Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int column = counter switch { "rx_bytes" => 0, "rx_packets" => 1, "tx_bytes" => 8, "tx_packets" => 9,
            _ => throw new ArgumentException($"no such counter: {counter}", nameof(counter)) };
        return long.Parse(fields[column]);
    }

    /// <summary>
    /// Waits until the capsule's eth0 <paramref name="counter"/> has grown by <paramref name="amount"/>
    /// from when called: traffic of a workload that reports nothing until it ends (iperf3 -J, curl,
    /// redis-benchmark) is under way and has made that much progress.
    /// </summary>
    public async Task WaitForTraffic(string capsule, string counter, long amount, int seconds = 60)
    {
        var from = await NetCounter(capsule, counter);
        await Until(async () => await NetCounter(capsule, counter) >= from + amount,
            $"{capsule}'s {counter} to grow by {amount} from {from}", seconds);
    }

    /// <summary>
    /// Waits until something listens on TCP <paramref name="port"/> in a network namespace. Asks the
    /// kernel (ss) rather than connecting: a probe connection would be one more client for the server.
    /// </summary>
    public static Task WaitForListener(string netns, int port) => Until(async () =>
        (await Cli.Exec("ip", ["netns", "exec", netns, "ss", "-Hltn", $"sport = :{port}"])).Ok().Out.Trim() != "",
        $"a listener on port {port} in {netns}");

    /// <summary>
    /// The kernel's TCP counters in a namespace (what nstat reads): TcpExt TCPTimeouts (retransmission
    /// timeouts) and Tcp RetransSegs.
    /// </summary>
    public async Task<(long Timeouts, long Retrans)> TcpCounters(string netns)
    {
        long Field(string text, string section, string name)
        {
            var lines = text.Split('\n').Where(l => l.StartsWith(section + ":")).ToArray();
            var keys = lines[0].Split(' ');
            var values = lines[1].Split(' ');
            return long.Parse(values[Array.IndexOf(keys, name)]);
        }
        var netstat = (await Cli.Exec("ip", ["netns", "exec", netns, "cat", "/proc/net/netstat"])).Ok().Out;
        var snmp = (await Cli.Exec("ip", ["netns", "exec", netns, "cat", "/proc/net/snmp"])).Ok().Out;
        return (Field(netstat, "TcpExt", "TCPTimeouts"), Field(snmp, "Tcp", "RetransSegs"));
    }

    /// <summary>Waits until a TCP port accepts connections from inside <paramref name="capsule"/>.</summary>
    public async Task WaitForPort(string capsule, string address, int port)
    {
        for (var i = 0; i < 100; i++)
        {
            if ((await InCapsule(capsule, "bash", "-c", $"exec 3<>/dev/tcp/{address}/{port}")).Code == 0) return;
            await Task.Delay(100);
        }
        Assert.Fail($"{address}:{port} never accepted a connection from {capsule}");
    }
}

/// <summary>
/// A lab whose directory is a real etcd cluster of three members, one on each of h1..h3, reached
/// by the agents over the underlay (`lab up --directory etcd`).
/// </summary>
public sealed class EtcdLabFixture : LabFixture
{
    protected override string[] UpOptions => ["--directory", "etcd", "--etcd-members", "3"];

    /// <summary>
    /// Kills <paramref name="host"/>'s etcd member outright (its supervisor starts it again, as systemd would).
    /// </summary>
    public int KillEtcdMember(string host)
    {
        var pid = int.Parse(File.ReadAllText(new LabPaths(Name).EtcdPidFile(host)).Trim());
        Agent.Linux.Native.kill(pid, 9);
        return pid;
    }
}

// One collection, run one test at a time: both labs live for the whole run, the etcd one beside
// the embedded one, so the two never load the machine at once.
[CollectionDefinition("lab")]
public class LabCollection : ICollectionFixture<LabFixture>, ICollectionFixture<EtcdLabFixture>;
