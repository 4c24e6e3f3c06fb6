using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Ordinary hosts that run no Capsule software (l1, behind the gateway) and capsules reach each
/// other, also while the capsules move: unmodified curl, iperf3 and python on both sides.
/// </summary>
[Collection("lab")]
public sealed class GatewayTests(LabFixture lab)
{
    string L1 => $"{lab.Name}-l1";

    [Fact]
    public async Task Curl_on_an_ordinary_host_downloads_200_MB_across_two_migrations_with_no_retransmission_timeout()
    {
        var www = Path.Combine(Path.GetTempPath(), lab.Name + "-big");
        Directory.CreateDirectory(www);
        var blob = new byte[200 << 20];
        Random.Shared.NextBytes(blob);
        await File.WriteAllBytesAsync(Path.Combine(www, "blob"), blob);
        var want = Convert.ToHexStringLower(SHA256.HashData(blob));
        blob = [];
        try
        {
            var (web, _) = await lab.Create("bigweb", "h1", "python3", "-m", "http.server", "8090", "--directory", www);
            // The server answers l1 through the gateway (a wait that ends in a clear failure if it never does).
            await LabFixture.Until(async () =>
                (await lab.OnHost("l1", "curl", "-s", "-o", "/dev/null", "-m", "2", $"http://{web}:8090/")).Code == 0,
                $"http://{web}:8090/ to answer l1", seconds: 30);
            var before = await lab.TcpCounters(L1);
            // Paced so that the download spans both moves.
            var download = lab.OnHost("l1", "sh", "-c",
                $"curl -sS --fail --limit-rate 40M http://{web}:8090/blob | sha256sum");
            // Fixed pauses still: waiting instead for the server's eth0 to send 50 MB more saw the download
            // stall after about 15 MB, twice in three runs (before any move); not yet understood (issue 8).
            await Task.Delay(1500);
            var m1 = await lab.Migrate("bigweb", "h2");
            Assert.True(m1.GetProperty("ok").GetBoolean(), m1.ToString());
            Assert.True(m1.GetProperty("peers").GetInt32() >= 1); // the gateway held l1's packets
            await Task.Delay(1500);
            var m2 = await lab.Migrate("bigweb", "h3");
            Assert.True(m2.GetProperty("ok").GetBoolean(), m2.ToString());
            var r = (await download).Ok();
            Assert.Equal(want, r.Out.Split(' ')[0]);
            var after = await lab.TcpCounters(L1);
            Assert.Equal(0, after.Timeouts - before.Timeouts);
            Assert.Equal(0, after.Retrans - before.Retrans);
        }
        finally
        {
            await lab.Run("rm", "bigweb");
            Directory.Delete(www, recursive: true);
        }
    }

    [Fact]
    public async Task A_capsule_as_client_of_an_ordinary_server_keeps_its_stream_across_a_migration()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var server = Cli.Exec("timeout",
            ["60", "ip", "netns", "exec", L1, "python3", LabFixture.Tool("stream.py"), "server", "7020"]);
        await LabFixture.WaitForListener(L1, 7020);
        await lab.Create("gcli", "h2", "python3", LabFixture.Tool("stream.py"), "client", "198.51.100.11", "7020", "8");
        string sent;
        try
        {
            await lab.WaitForLog("gcli", "PROGRESS sent=");
            var m = await lab.Migrate("gcli", "h3");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            var done = (await lab.WaitForLog("gcli", "DONE")).Split('\n').Single(l => l.StartsWith("DONE"));
            sent = done.Split(' ')[1][5..];
            Assert.Contains($"echoed={sent}", done);
        }
        finally
        {
            await lab.Run("rm", "gcli");
            await Cli.Exec("ip", ["netns", "exec", L1, "pkill", "-f", "stream.py server 7020"]);
        }
        var s = await server;
        Assert.DoesNotContain("ERROR", s.Out);
        Assert.Contains($"CLOSED after {sent}\n", s.Out); // every byte the client sent arrived, then a clean close
    }

    [Theory]
    [InlineData("buffer")]
    [InlineData("drop")]
    public async Task Udp_from_an_ordinary_host_across_a_migration_follows_the_capsules_policy(string policy)
    {
        var name = "udp" + policy;
        var (srv, _) = await lab.CreateWith(name, "h1", ["--udp-policy", policy], "iperf3", "-s");
        try
        {
            await LabFixture.Until(async () =>
                (await lab.OnHost("l1", "bash", "-c", $"exec 3<>/dev/tcp/{srv}/5201")).Code == 0,
                $"iperf3 on {srv} to accept l1's connection", seconds: 30);
            // Long enough that the move, even a slow one, ends well before the run: held datagrams
            // delivered after its end are not counted by iperf3's server.
            // A modest rate (about 700 datagrams a second), so that on a busy machine the receiver keeps up
            // and only the move decides what is lost.
            var run = lab.OnHost("l1", "iperf3", "-c", srv, "-u", "-b", "8M", "-t", "8", "-J");
            // Datagrams arrive (half a second of them): it moves early in the run.
            await lab.WaitForTraffic(name, "rx_bytes", 500_000);
            string[] hosts = ["gw", "h1", "h2"];
            var before = await Task.WhenAll(hosts.Select(lab.Stats));
            var m = await lab.Migrate(name, "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            var r = (await run).Ok();
            var after = await Task.WhenAll(hosts.Select(lab.Stats));
            // Every packet the data planes dropped meanwhile, by host and reason: where a lost datagram went.
            var drops = string.Join(", ", hosts.SelectMany((h, i) => after[i]
                .Where(kv => kv.Key.StartsWith("drop_") && kv.Value != before[i].GetValueOrDefault(kv.Key))
                .Select(kv => $"{h} {kv.Key} +{kv.Value - before[i].GetValueOrDefault(kv.Key)}")));
            using var doc = JsonDocument.Parse(r.Out);
            var (lost, tail, sent) = LabFixture.IperfUdpLoss(doc.RootElement);
            var dropped = m.GetProperty("dropped").GetInt64();
            var held = m.GetProperty("held").GetInt64();
            var facts = $"{lost} of {sent} datagrams lost, {tail} after the last one iperf3 counted; " +
                $"data-plane drops: {(drops == "" ? "none" : drops)}; migration: {m}";
            // The end of the run, seconds after the move: what iperf3 missed there is its own (see IperfUdpLoss),
            // a few at most; a move that lost the flow would lose thousands there.
            Assert.True(tail < sent / 16, facts);
            if (policy == "buffer")
            {
                Assert.Equal(0, dropped);
                Assert.True(held > 10, $"only {held} packets held");
                // What tells where datagrams went: the move's own account, and the receiver's UDP counters.
                var snmp = await Cli.Exec("ip", ["netns", "exec", $"{lab.Name}-h2-c-{name}", "cat", "/proc/net/snmp"]);
                var udp = string.Join('\n', snmp.Out.Split('\n').Where(l => l.StartsWith("Udp:")));
                Assert.True(lost == 0, $"{facts}\nreceiver's {udp}");
            }
            else
            {
                Assert.True(dropped > 10, $"only {dropped} datagrams dropped");
                // What the gateway counted is what iperf3 missed.
                Assert.True(dropped == lost, facts);
            }
        }
        finally
        {
            await lab.Run("rm", name);
        }
    }

    [Fact]
    public async Task A_locator_no_capsule_holds_gets_icmp_unreachable_and_nothing_reaches_the_overlay()
    {
        var gw = await lab.Stats("gw");
        var h1 = await lab.Stats("h1");
        var r = await lab.OnHost("l1", "ping", "-c", "3", "-i", "0.2", "-W", "1", "100.64.200.200");
        Assert.NotEqual(0, r.Code);
        Assert.Contains("From 198.51.100.1 icmp_seq=1 Destination Host Unreachable", r.Out);
        var gwAfter = await lab.Stats("gw");
        Assert.Equal(gw["egress_packets"], gwAfter["egress_packets"]);
        Assert.Equal(3, gwAfter["icmp_unreachable_sent"] - gw["icmp_unreachable_sent"]);
        Assert.Equal(h1["ingress_packets"], (await lab.Stats("h1"))["ingress_packets"]);
    }
}

/// <summary>
/// The gateway's zero-window pause: an ordinary peer waits out a long freeze with no retransmission timeout.
/// </summary>
[Collection("lab")]
public sealed class GatewayPauseTests(LabFixture lab)
{
    [Fact]
    public async Task An_ordinary_peer_paused_with_a_zero_window_has_no_retransmission_timeout_and_one_not_paused_has()
    {
        // A heavy capsule (200 MB of memory to move) so the freeze far outlasts TCP's 200 ms minimum timer.
        var (srv, _) = await lab.Create("heavy", "h1", "python3", LabFixture.Tool("stream.py"),
            "server", "7030", "200");
        var l1 = $"{lab.Name}-l1";
        try
        {
            await lab.WaitForLog("heavy", "LISTENING", seconds: 90);
            async Task<(long Timeouts, JsonElement Migration, string Done)> Run(string to, params string[] extra)
            {
                var before = await lab.TcpCounters(l1);
                var rr = Cli.Exec("ip",
                    ["netns", "exec", l1, "python3", LabFixture.Tool("stream.py"), "rr", srv, "7030", "6"]);
                // A few hundred requests answered: the exchange runs when the server moves.
                await lab.WaitForTraffic("heavy", "rx_packets", 300);
                var m = await lab.Migrate("heavy", to, extra);
                Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
                var r = (await rr).Ok();
                Assert.Contains("DONE", r.Out);
                return ((await lab.TcpCounters(l1)).Timeouts - before.Timeouts, m, r.Out.Trim());
            }
            var paused = await Run("h2");
            Assert.True(paused.Migration.GetProperty("phases_ms").GetProperty("total").GetInt64() > 400,
                paused.Migration.ToString());
            Assert.Equal(0, paused.Timeouts);
            var gw = await lab.Stats("gw");
            Assert.True(gw["tcp_paused"] >= 1 && gw["tcp_reopened"] >= 1);

            // The comparison: the gateway holds but does not pause (a fault point, not a product switch).
            await FaultLab.Arm(lab, "gw", "holder.no-pause", "skip");
            var unpaused = await Run("h3");
            Assert.True(unpaused.Timeouts >= 1, $"no timeout without the pause either: {unpaused.Done}");
        }
        finally
        {
            await lab.Run("rm", "heavy");
        }
    }
}
