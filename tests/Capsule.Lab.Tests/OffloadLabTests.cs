using System.Security.Cryptography;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Three hosts and an ordinary host behind the gateway; h3 is restarted without offloads, on one lane, by a test.
/// </summary>
public sealed class OffloadLabFixture : LabFixture
{
    public OffloadLabFixture()
    {
        Hosts = 3;
        Legacy = 1;
    }
}

/// <summary>
/// The data plane's offloads (issue 11) with unmodified programs: a TUN that hands over and takes super-packets,
/// UDP GSO sends and UDP GRO receives. Large downloads between capsules, and from a capsule to an ordinary host
/// through the gateway, arrive byte for byte, and the counters show the offloads did the work; a host with
/// offloads off and one with them on carry each other's traffic. The lanes (one TUN queue and socket each, one per
/// core): many flows spread over them and each arrives whole; a host of one lane and one of several talk.
/// </summary>
[Collection("lab")]
public sealed class OffloadLabTests(OffloadLabFixture lab) : IClassFixture<OffloadLabFixture>
{
    const int Megabytes = 32;

    /// <summary>A folder with a random file, and its sha256: what a capsule's http.server serves.</summary>
    static (string Folder, string Sha256) Blob(string name, int megabytes = Megabytes)
    {
        var folder = Path.Combine(Path.GetTempPath(), name);
        Directory.CreateDirectory(folder);
        var blob = new byte[megabytes << 20];
        Random.Shared.NextBytes(blob);
        File.WriteAllBytes(Path.Combine(folder, "blob"), blob);
        return (folder, Convert.ToHexStringLower(SHA256.HashData(blob)));
    }

    async Task<string> Serve(string name, string host, string folder, int port)
    {
        var (web, _) = await lab.Create(name, host, "python3", "-m", "http.server", port.ToString(), "--directory",
            folder);
        return web;
    }

    async Task<string> FetchInCapsule(string capsule, string web, int port)
    {
        await lab.WaitForPort(capsule, web, port);
        var r = (await lab.InCapsule(capsule, "sh", "-c", $"curl -sS --fail http://{web}:{port}/blob | sha256sum"))
            .Ok();
        return r.Out.Split(' ')[0];
    }

    static long Gained(Dictionary<string, long> before, Dictionary<string, long> after, string counter) =>
        after[counter] - before[counter];

    [Fact]
    public async Task Super_packets_are_cut_sent_with_GSO_received_with_GRO_coalesced_and_arrive_intact()
    {
        var (folder, want) = Blob(lab.Name + "-offload");
        try
        {
            var web = await Serve("oweb", "h1", folder, 8081);
            await lab.Create("ofetch", "h2", "sleep", "infinity");
            var (h1, h2) = (await lab.Stats("h1"), await lab.Stats("h2"));
            Assert.Equal(want, await FetchInCapsule("ofetch", web, 8081));
            var (h1After, h2After) = (await lab.Stats("h1"), await lab.Stats("h2"));
            // TCP from the server's capsule leaves h1's TUN as super-packets, cut there, sent as UDP GSO runs; h2's
            // socket takes them as GRO runs and writes the segments back to its TUN joined.
            Assert.True(Gained(h1, h1After, "egress_super_packets") > 0, "h1 read no super-packet from its TUN");
            Assert.True(Gained(h1, h1After, "egress_gso_sends") > 0, "h1 sent no UDP GSO message");
            Assert.True(Gained(h2, h2After, "ingress_gro_messages") > 0, "h2 received no UDP GRO message");
            Assert.True(Gained(h2, h2After, "ingress_super_packets") > 0, "h2 wrote no coalesced packet to its TUN");
            Assert.True(Gained(h1, h1After, "egress_packets") > (Megabytes << 20) / 1500,
                "h1 counted fewer datagrams than the file needs: segments are counted one by one");
            // Nothing allocated per packet: what the data-plane threads allocated while some 23,000 datagrams
            // went each way is what a new flow costs once (its counters and table entries), a few KiB.
            foreach (var (host, before, after, counter) in new[] {
                ("h1", h1, h1After, "egress_thread_allocated_bytes"),
                ("h2", h2, h2After, "ingress_thread_allocated_bytes") })
                Assert.True(Gained(before, after, counter) < 64 << 10,
                    $"{host}'s {counter} grew by {Gained(before, after, counter)} bytes in one download");

            // The same file to an ordinary host: the gateway coalesces what it hands the ordinary host's stack.
            var gw = await lab.Stats("gw");
            await LabFixture.Until(async () => (await lab.OnHost("l1", "curl", "-s", "-o", "/dev/null", "-m", "2",
                $"http://{web}:8081/")).Code == 0, $"http://{web}:8081/ to answer l1", seconds: 30);
            var r = (await lab.OnHost("l1", "sh", "-c", $"curl -sS --fail http://{web}:8081/blob | sha256sum")).Ok();
            Assert.Equal(want, r.Out.Split(' ')[0]);
            Assert.True(Gained(gw, await lab.Stats("gw"), "ingress_super_packets") > 0,
                "the gateway wrote no coalesced packet to its TUN");
        }
        finally
        {
            await lab.Run("rm", "oweb");
            await lab.Run("rm", "ofetch");
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task Many_flows_spread_over_the_lanes_of_both_hosts_and_each_arrives_whole()
    {
        const int Flows = 16;
        var (folder, want) = Blob(lab.Name + "-lanes", megabytes: 2);
        try
        {
            var web = await Serve("lweb", "h1", folder, 8084);
            await lab.Create("lfetch", "h2", "sleep", "infinity");
            await lab.WaitForPort("lfetch", web, 8084);
            var (h1, h2) = (await lab.Stats("h1"), await lab.Stats("h2"));
            Assert.True(h1["dataplane_lanes"] >= 2, "the lab's hosts run a lane per core, and this machine has two");
            // Sixteen downloads at once: sixteen flows, which the TUN spreads over its queues by their hash (all on
            // one of two queues: once in 32,768 runs).
            var r = (await lab.InCapsule("lfetch", "sh", "-c",
                $"for i in $(seq {Flows}); do (curl -sS --fail http://{web}:8084/blob | sha256sum) & done; wait"))
                .Ok();
            var sums = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]).ToList();
            Assert.Equal(Enumerable.Repeat(want, Flows), sums);
            var (h1After, h2After) = (await lab.Stats("h1"), await lab.Stats("h2"));
            for (var lane = 0; lane < 2; lane++)
            {
                Assert.True(Gained(h1, h1After, $"lane{lane}_egress_packets") > 100,
                    $"h1's lane {lane} sent {Gained(h1, h1After, $"lane{lane}_egress_packets")} packets");
                // What lane k of h1 sends comes from port + k, which h2 gives to its lane (port + k) mod 2.
                Assert.True(Gained(h2, h2After, $"lane{lane}_ingress_packets") > 100,
                    $"h2's lane {lane} received {Gained(h2, h2After, $"lane{lane}_ingress_packets")} packets");
            }
        }
        finally
        {
            await lab.Run("rm", "lweb");
            await lab.Run("rm", "lfetch");
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task A_host_without_offloads_on_one_lane_and_one_with_both_carry_each_others_traffic()
    {
        // h3 restarted as an agent configured with "Offloads": false and "Lanes": 1 would be: the settings from its
        // environment.
        (await Cli.Exec(Cli.Binary, ["--lab", lab.Name, "lab", "restart", "h3"],
            env: new Dictionary<string, string>
            {
                ["CAPSULE_AGENT__OFFLOADS"] = "false",
                ["CAPSULE_AGENT__LANES"] = "1",
            })).Ok();
        var (folder, want) = Blob(lab.Name + "-plain");
        try
        {
            var onOffloads = await Serve("pweb1", "h1", folder, 8082);
            var onPlain = await Serve("pweb3", "h3", folder, 8083);
            await lab.Create("pfetch1", "h1", "sleep", "infinity");
            await lab.Create("pfetch3", "h3", "sleep", "infinity");
            var h3 = await lab.Stats("h3");
            Assert.Equal(want, await FetchInCapsule("pfetch3", onOffloads, 8082));
            Assert.Equal(want, await FetchInCapsule("pfetch1", onPlain, 8083));
            var h3After = await lab.Stats("h3");
            Assert.Equal(1, h3After["dataplane_lanes"]);
            // h3 moved one packet per call: no super-packet, no GSO or GRO, and it still got and sent the file.
            foreach (var counter in new[] { "egress_super_packets", "egress_gso_sends", "ingress_gro_messages",
                "ingress_super_packets" })
                Assert.True(Gained(h3, h3After, counter) == 0,
                    $"h3 has offloads off, yet {counter} grew by {Gained(h3, h3After, counter)}");
            Assert.True(Gained(h3, h3After, "ingress_packets") > (Megabytes << 20) / 1500);
        }
        finally
        {
            foreach (var c in new[] { "pweb1", "pweb3", "pfetch1", "pfetch3" }) await lab.Run("rm", c);
            Directory.Delete(folder, recursive: true);
        }
    }
}
