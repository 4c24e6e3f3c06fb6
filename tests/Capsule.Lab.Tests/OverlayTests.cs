using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using Capsule.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Capsules on h1 and h2 talking through the overlay, with unmodified programs: iperf3, curl and
/// python's http.server, tcpdump on the underlay. One lab for the class; each test uses capsules
/// of its own and removes them.
/// </summary>
[Collection("lab")]
public sealed class OverlayTests(LabFixture lab)
{
    async Task AssertUdpCarried(string client, string server, string[] rate, int minPackets)
    {
        var runs = new List<string>();
        for (var attempt = 0; attempt < 3; attempt++)
        {
            var r = (await lab.InCapsule(client, ["iperf3", "-c", server, "-u", .. rate, "-t", "2", "-J"])).Ok();
            using var doc = JsonDocument.Parse(r.Out);
            var sum = doc.RootElement.GetProperty("end").GetProperty("sum");
            var packets = sum.GetProperty("packets").GetInt64();
            var lost = sum.GetProperty("lost_percent").GetDouble();
            Assert.True(packets > minPackets, $"only {packets} UDP datagrams ({string.Join(' ', rate)})");
            if (lost < 2.0) return;
            runs.Add($"{lost}%");
        }
        Assert.Fail($"UDP ({string.Join(' ', rate)}) lost {string.Join(", ", runs)} through the overlay in 3 runs");
    }

    [Fact]
    public async Task Iperf3_tcp_and_udp_between_capsules_on_two_hosts()
    {
        var (srv, _) = await lab.Create("ipsrv", "h2", "iperf3", "-s");
        await lab.Create("ipcli", "h1", "sleep", "infinity");
        try
        {
            await lab.WaitForPort("ipcli", srv, 5201);
            var tcp = (await lab.InCapsule("ipcli", "iperf3", "-c", srv, "-t", "2", "-J")).Ok();
            using (var doc = JsonDocument.Parse(tcp.Out))
            {
                var end = doc.RootElement.GetProperty("end");
                var received = end.GetProperty("sum_received").GetProperty("bytes").GetInt64();
                var sent = end.GetProperty("sum_sent").GetProperty("bytes").GetInt64();
                Assert.True(received > 1_000_000, $"TCP moved only {received} bytes");
                Assert.True(received <= sent);
            }
            // UDP at a modest rate: the overlay can carry it with (almost) no loss. UDP has no flow control, so a
            // machine busy with other work loses datagrams at the receiver's socket now and then, whatever
            // the path: the best of three runs shows what the overlay can do, one run what the machine did.
            await AssertUdpCarried("ipcli", srv, ["-b", "50M"], minPackets: 1000);
            await AssertUdpCarried("ipcli", srv, ["-b", "20M", "-l", "8000"], minPackets: 500);
        }
        finally
        {
            await lab.Run("rm", "ipsrv");
            await lab.Run("rm", "ipcli");
        }
    }

    [Fact]
    public async Task A_50_MB_file_crosses_the_overlay_intact_over_http()
    {
        var www = Path.Combine(Path.GetTempPath(), lab.Name + "-www");
        Directory.CreateDirectory(www);
        var blob = new byte[50 << 20];
        Random.Shared.NextBytes(blob);
        await File.WriteAllBytesAsync(Path.Combine(www, "blob"), blob);
        var want = Convert.ToHexStringLower(SHA256.HashData(blob));
        try
        {
            var (web, _) = await lab.Create("web", "h1", "python3", "-m", "http.server", "8080", "--directory", www);
            await lab.Create("fetch", "h2", "sleep", "infinity");
            await lab.WaitForPort("fetch", web, 8080);
            var r = (await lab.InCapsule("fetch", "sh", "-c",
                $"curl -sS --fail http://{web}:8080/blob | sha256sum")).Ok();
            Assert.Equal(want, r.Out.Split(' ')[0]);
        }
        finally
        {
            await lab.Run("rm", "web");
            await lab.Run("rm", "fetch");
            Directory.Delete(www, recursive: true);
        }
    }

    [Fact]
    public async Task The_underlay_carries_only_host_addresses_outside_and_capsule_addresses_inside()
    {
        var (a, _) = await lab.Create("capa", "h1", "sleep", "infinity");
        var (b, _) = await lab.Create("capb", "h2", "sleep", "infinity");
        var pcap = Path.Combine(Path.GetTempPath(), lab.Name + ".pcap");
        try
        {
            // h1 may not know where capb is for a moment after its create (the directory's change reaches
            // each agent's table by its watch): its first packets would be dropped, and the count below
            // come up short (seen: 9 of 10). So the path is up before the capture starts.
            await LabFixture.Until(async () => (await lab.InCapsule("capa", "ping", "-c", "1", "-W", "1", b)).Code == 0,
                "capb to answer capa");
            // tcpdump on the underlay bridge, in the lab's underlay namespace; bounded by count and time. The
            // control plane shares the underlay (agents' gRPC on 7471, the directory's on 7472, etcd's 2379 and
            // 2380, all TCP between host addresses): its calls come whenever they come, so they are left out;
            // every other packet must be an overlay datagram.
            var capture = Cli.Exec("timeout", ["20", "nsenter", $"--net=/run/netns/{lab.Name}-ul", "--",
                "tcpdump", "-i", "br0", "-n", "-U", "-c", "10", "-w", pcap,
                "ip and not (tcp and (port 7471 or port 7472 or port 2379 or port 2380))"]);
            // tcpdump creates its output file once it has opened the interface and set its filter:
            // from then on it captures.
            await LabFixture.Until(async () =>
            {
                if (capture.IsCompleted) Assert.Fail($"tcpdump ended before it captured: {(await capture).Err}");
                return File.Exists(pcap);
            }, "tcpdump to attach", seconds: 15);
            (await lab.InCapsule("capa", "ping", "-c", "5", "-i", "0.2", b)).Ok();
            await capture;
            var packets = ReadPcap(pcap);
            Assert.True(packets.Count >= 10, $"captured only {packets.Count} packets");
            var hosts = new[] { "198.18.0.1", "198.18.0.2" };
            foreach (var eth in packets)
            {
                var ip = eth.AsSpan(14);
                Assert.Equal(0x45, ip[0]);
                Assert.Contains(Addr(ip[12..]), hosts);
                Assert.Contains(Addr(ip[16..]), hosts);
                Assert.Equal(17, ip[9]); // UDP between agents, nothing else
                var udp = ip[20..];
                Assert.Equal(7470, BinaryPrimitives.ReadUInt16BigEndian(udp[2..]));
                var payload = udp[8..];
                Assert.Equal([0xCA, 2, 1, 1], payload[..4].ToArray()); // our header, version 2, encrypted
                // Encrypted by default: where the inner header's addresses would be, the capsules' are not.
                var inner = payload[Wire.HeaderSize..];
                Assert.DoesNotContain(Addr(inner[12..]), new[] { a, b });
                Assert.DoesNotContain(Addr(inner[16..]), new[] { a, b });
            }
        }
        finally
        {
            await lab.Run("rm", "capa");
            await lab.Run("rm", "capb");
            File.Delete(pcap);
        }
    }

    [Fact]
    public async Task Same_host_traffic_stays_local_and_oversized_datagrams_are_fragmented_not_lost()
    {
        var (near, _) = await lab.Create("near", "h1", "sleep", "infinity");
        await lab.Create("here", "h1", "sleep", "infinity");
        var (far, _) = await lab.Create("far", "h2", "sleep", "infinity");
        try
        {
            var before = await lab.Stats("h1");
            (await lab.InCapsule("here", "ping", "-c", "3", "-i", "0.2", "-W", "2", near)).Ok();
            var after = await lab.Stats("h1");
            Assert.Equal(before["egress_packets"], after["egress_packets"]); // never entered the overlay

            // 4000-byte ICMP and 8000-byte UDP datagrams exceed the capsule MTU (1436): the capsule's
            // kernel fragments them to fit, each fragment is wrapped, and all of them arrive.
            (await lab.InCapsule("here", "ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "4000", far)).Ok();
            Assert.Contains(" mtu 1436 ", (await lab.InCapsule("far", "ip", "-o", "link", "show", "eth0")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "near");
            await lab.Run("rm", "here");
            await lab.Run("rm", "far");
        }
    }

    static string Addr(ReadOnlySpan<byte> b) => $"{b[0]}.{b[1]}.{b[2]}.{b[3]}";

    /// <summary>Minimal pcap reader: Ethernet frames as captured.</summary>
    static List<byte[]> ReadPcap(string path)
    {
        var data = File.ReadAllBytes(path);
        var frames = new List<byte[]>();
        for (var off = 24; off + 16 <= data.Length;)
        {
            var len = (int)BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(off + 8));
            frames.Add(data.AsSpan(off + 16, len).ToArray());
            off += 16 + len;
        }
        return frames;
    }
}
