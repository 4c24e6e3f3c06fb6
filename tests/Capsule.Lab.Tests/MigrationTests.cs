using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Live migration with real processes, real CRIU and the kernel's own TCP: streams, iperf3 and
/// redis keep going while capsules move between h1, h2 and h3. (CRIU here cannot checkpoint a
/// process that runs as another user, so every workload runs as root; see DESIGN.md.)
/// </summary>
[Collection("lab")]
public sealed class MigrationTests(LabFixture lab) : MigrationCases(lab);

/// <summary>The same migrations with the directory in a real etcd cluster (`lab up --directory etcd`).</summary>
[Collection("lab")]
public sealed class EtcdMigrationTests(EtcdLabFixture lab) : MigrationCases(lab);

/// <summary>Every migration case, run once against each kind of directory.</summary>
public abstract class MigrationCases(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    static void AssertMoved(JsonElement r, string to)
    {
        Assert.True(r.GetProperty("ok").GetBoolean(), r.ToString());
        Assert.Equal(to, r.GetProperty("host").GetString());
        // The phases are consecutive laps of one clock: together they fit in the total. Transfer is
        // the target's reply time less its restore, so it can come out negative if the two disagree;
        // freezing and dumping a process tree, and restoring it, always take a measurable while.
        var ms = r.GetProperty("phases_ms");
        long Phase(string name) => ms.GetProperty(name).GetInt64();
        var phases = new[] { "sync", "dump", "transfer", "restore", "flush" };
        Assert.True(phases.Sum(Phase) <= Phase("total"), ms.ToString());
        Assert.True(Phase("transfer") >= 0 && Phase("dump") > 0 && Phase("restore") > 0, ms.ToString());
        Assert.True(r.GetProperty("image_bytes").GetInt64() > 0);
    }

    [Fact]
    public async Task A_tcp_stream_survives_moving_the_client_and_then_the_server_with_no_byte_lost()
    {
        var (srv, _) = await lab.Create("ssrv", "h2", Stream("server", "7000"));
        await lab.WaitForLog("ssrv", "LISTENING");
        await lab.Create("scli", "h1", Stream("client", srv, "7000", "12"));
        try
        {
            await lab.WaitForLog("scli", "PROGRESS sent=");
            AssertMoved(await lab.Migrate("scli", "h3"), "h3");
            await lab.WaitForProgress("scli", 1_000_000); // the stream runs from h3 (about 1 s) before its server moves
            var r = await lab.Migrate("ssrv", "h1");
            AssertMoved(r, "h1");
            Assert.True(r.GetProperty("peers").GetInt32() >= 1); // h3, where the client now is, held its packets
            var log = await lab.WaitForLog("scli", "DONE");
            var done = log.Split('\n').Single(l => l.StartsWith("DONE"));
            var sent = long.Parse(done.Split(' ')[1][5..]);
            // Every byte the client sent, before, between and after both moves, came back through the moved
            // server. How many it sent in its 12 s is throughput, which `capsule bench migrate` measures: a
            // floor here would fail on a busy machine without anything lost.
            Assert.True(sent > 1_000_000, done);
            Assert.Contains($"echoed={sent}", done);
            Assert.DoesNotContain("ERROR", await lab.Logs("ssrv"));
            var ls = (await lab.Run("ls", "--json")).Ok().Out;
            Assert.Contains("\"host\": \"h3\"", ls);
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h1-c-scli")); // nothing left on the old hosts
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h2-c-ssrv"));
        }
        finally
        {
            await lab.Run("rm", "scli");
            await lab.Run("rm", "ssrv");
        }
    }

    [Fact]
    public async Task A_failed_migration_leaves_the_capsule_running_on_its_host_with_its_stream_intact()
    {
        var (srv, _) = await lab.Create("fsrv", "h2", Stream("server", "7001"));
        await lab.WaitForLog("fsrv", "LISTENING");
        await lab.Create("fcli", "h1", Stream("client", srv, "7001", "25"));
        try
        {
            await lab.WaitForLog("fcli", "PROGRESS sent=");
            // A failed dump, a corrupt transfer, a failed restore: each resumes the capsule where it was.
            foreach (var (host, point, action) in new[]
                     {
                         ("h2", "source.dump", "fail"), ("h2", "source.transfer", "corrupt"),
                         ("h3", "target.restore", "fail"),
                     })
            {
                var progress = await lab.StreamProgress("fcli");
                await FaultLab.Arm(lab, host, point, action);
                var r = await lab.Run("migrate", "fsrv", "--to", "h3");
                Assert.Equal(1, r.Code);
                Assert.Contains("resumed on h2", r.Err);
                Assert.Contains(action == "corrupt" ? "checksum" : "on purpose", r.Err);
                await lab.WaitForStreamProgress("fcli", progress); // the stream goes on before the next try
            }
            Assert.Contains("\"host\": \"h2\"", (await lab.Run("ls", "--json")).Ok().Out);
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h3-c-fsrv")); // the target kept nothing
            var done = await lab.WaitForLog("fcli", "DONE");
            Assert.DoesNotContain("ERROR", await lab.Logs("fsrv"));
            // Unknown host and a second migration while one runs are refused with a clear word.
            var bad = await lab.Run("migrate", "fsrv", "--to", "h9");
            Assert.Equal(1, bad.Code);
            Assert.Contains("no host named 'h9'", bad.Err);
        }
        finally
        {
            await lab.Run("rm", "fcli");
            await lab.Run("rm", "fsrv");
        }
    }

    [Fact]
    public async Task A_second_migration_of_the_same_capsule_is_refused_while_one_runs()
    {
        await lab.Create("twice", "h1", "sleep", "infinity");
        try
        {
            var results = await Task.WhenAll(lab.Run("migrate", "twice", "--to", "h2"),
                lab.Run("migrate", "twice", "--to", "h3"));
            Assert.Single(results, r => r.Code == 0);
            var refused = Assert.Single(results, r => r.Code != 0);
            Assert.Contains("already migrating", refused.Err);
        }
        finally
        {
            await lab.Run("rm", "twice");
        }
    }

    [Fact]
    public async Task Iperf3_across_a_migration_of_its_server_completes()
    {
        var (srv, _) = await lab.Create("isrv", "h2", "iperf3", "-s");
        await lab.Create("icli", "h1", "sleep", "infinity");
        try
        {
            await lab.WaitForPort("icli", srv, 5201);
            var run = lab.InCapsule("icli", "iperf3", "-c", srv, "-t", "6", "-b", "200M", "-J");
            await lab.WaitForTraffic("isrv", "rx_bytes", 25_000_000); // about 1 s in: the server moves mid-transfer
            AssertMoved(await lab.Migrate("isrv", "h3"), "h3");
            var r = (await run).Ok();
            using var doc = JsonDocument.Parse(r.Out);
            Assert.False(doc.RootElement.TryGetProperty("error", out _), r.Out);
            var received = doc.RootElement.GetProperty("end").GetProperty("sum_received")
                .GetProperty("bytes").GetInt64();
            // More than had arrived when the server moved: the transfer went on at its new host.
            Assert.True(received > 25_000_000, $"only {received} bytes arrived");
        }
        finally
        {
            await lab.Run("rm", "isrv");
            await lab.Run("rm", "icli");
        }
    }

    [Fact]
    public async Task Redis_benchmark_across_a_migration_of_redis_server_has_no_errors()
    {
        var (srv, _) = await lab.Create("redis", "h2", "redis-server", "--port", "6379", "--bind", "0.0.0.0",
            "--protected-mode", "no", "--save", "", "--appendonly", "no");
        await lab.Create("rcli", "h1", "sleep", "infinity");
        try
        {
            await lab.WaitForPort("rcli", srv, 6379);
            (await lab.InCapsule("rcli", "redis-cli", "-h", srv, "set", "before", "kept")).Ok();
            var bench = lab.InCapsule("rcli", "redis-benchmark", "-h", srv,
                "-n", "150000", "-c", "8", "-t", "set,get", "-q");
            // About 10,000 requests (of 300,000) in: redis moves while the benchmark hammers it.
            await lab.WaitForTraffic("redis", "rx_bytes", 1_000_000);
            AssertMoved(await lab.Migrate("redis", "h3"), "h3");
            var r = await bench;
            Assert.True(r.Code == 0, r.Out + r.Err);
            Assert.DoesNotContain("rror", r.Out + r.Err);
            Assert.Contains("requests per second", r.Out);
            Assert.Equal("kept",
                (await lab.InCapsule("rcli", "redis-cli", "-h", srv, "get", "before")).Ok().Out.Trim());
        }
        finally
        {
            await lab.Run("rm", "redis");
            await lab.Run("rm", "rcli");
        }
    }

    [Fact]
    public async Task A_capsule_of_several_processes_keeps_them_all_and_their_pipe()
    {
        var (_, pid) = await lab.Create("multi", "h1", "sh", "-c",
            "(i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done) | while read l; do echo got $l; done");
        try
        {
            await lab.WaitForLog("multi", "got 5");
            var before = Shells(pid);
            Assert.Equal(3, before); // the outer shell, the counting subshell, the reading loop (sleeps come and go)
            var r = await lab.Migrate("multi", "h2");
            AssertMoved(r, "h2");
            var after = r.GetProperty("pid").GetInt32();
            var n = int.Parse((await lab.WaitForLog("multi", "got ")).Split('\n').Last(l => l.StartsWith("got "))
                .Split(' ')[1]);
            await lab.WaitForLog("multi", $"got {n + 20}");
            // Every line once and in order, across the move: the pipe's contents came along.
            var lines = (await lab.Logs("multi")).Split('\n').Where(l => l.StartsWith("got "))
                .Select(l => int.Parse(l[4..])).ToList();
            Assert.Equal(Enumerable.Range(1, lines.Count), lines);
            Assert.Equal(before, Shells(after));
        }
        finally
        {
            await lab.Run("rm", "multi");
        }
    }

    [Fact]
    public async Task A_capsule_peer_of_a_long_freeze_is_paused_and_has_no_retransmission_timeout()
    {
        // 200 MB to move: the freeze far outlasts TCP's 200 ms minimum retransmission timer.
        var (srv, _) = await lab.Create("heavy2", "h2", "python3", LabFixture.Tool("stream.py"),
            "server", "7040", "200");
        try
        {
            await lab.WaitForLog("heavy2", "LISTENING", seconds: 90);
            await lab.Create("rrcli", "h1", "python3", LabFixture.Tool("stream.py"), "rr", srv, "7040", "6");
            await lab.WaitForLog("rrcli", "PROGRESS");
            var before = await lab.TcpCounters($"{lab.Name}-h1-c-rrcli");
            var m = await lab.Migrate("heavy2", "h3");
            AssertMoved(m, "h3");
            Assert.True(m.GetProperty("phases_ms").GetProperty("total").GetInt64() > 400, m.ToString());
            await lab.WaitForLog("rrcli", "DONE");
            var after = await lab.TcpCounters($"{lab.Name}-h1-c-rrcli");
            Assert.Equal(0, after.Timeouts - before.Timeouts);
            Assert.True((await lab.Stats("h1"))["tcp_paused"] >= 1);
        }
        finally
        {
            await lab.Run("rm", "rrcli");
            await lab.Run("rm", "heavy2");
        }
    }

    /// <summary>How many shell processes share the PID namespace of <paramref name="pid"/>.</summary>
    static int Shells(int pid)
    {
        var ns = new FileInfo($"/proc/{pid}/ns/pid").LinkTarget;
        return Directory.GetDirectories("/proc").Count(d =>
        {
            try
            {
                return int.TryParse(Path.GetFileName(d), out _)
                    && new FileInfo(Path.Combine(d, "ns/pid")).LinkTarget == ns
                    && File.ReadAllText(Path.Combine(d, "comm")).Trim() == "sh";
            }
            catch (IOException) { return false; }
            catch (UnauthorizedAccessException) { return false; }
        });
    }
}

/// <summary>After a migration the old host can be switched off: nothing of the capsule is left there.</summary>
[Collection("lab")]
public sealed class NoForwardingLeftBehindTests
{
    [Fact]
    public async Task After_a_migration_the_old_hosts_agent_is_stopped_and_the_stream_still_carries_data()
    {
        var lab = new LabFixture();
        try
        {
            await lab.InitializeAsync();
            var (srv, _) = await lab.Create("osrv", "h1", "python3", LabFixture.Tool("stream.py"), "server", "7002");
            await lab.WaitForLog("osrv", "LISTENING");
            await lab.Create("ocli", "h2", "python3", LabFixture.Tool("stream.py"), "client", srv, "7002", "8");
            await lab.WaitForLog("ocli", "PROGRESS sent=");
            var r = await lab.Migrate("osrv", "h3");
            Assert.True(r.GetProperty("ok").GetBoolean(), r.ToString());
            // Switch h1 off: its agent killed, its underlay link down.
            await Cli.Exec("kill", ["-9", FaultLab.AgentPid(lab, "h1").ToString()]);
            (await lab.OnHost("h1", "ip", "link", "set", "ul0", "down")).Ok();
            var log = await lab.WaitForLog("ocli", "DONE");
            Assert.DoesNotContain("ERROR", log);
        }
        finally
        {
            await lab.DisposeAsync();
        }
    }
}
