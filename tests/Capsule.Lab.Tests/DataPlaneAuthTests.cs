using System.Buffers.Binary;
using Capsule.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The authenticated data plane against a forger on the underlay (a namespace plugged into the lab's
/// underlay bridge, as in <see cref="UnderlayFilterTests"/>): overlay datagrams captured between h1 and h2
/// and sent again with h1's address as source are dropped as replays; a datagram with a good header and a
/// wrong tag is dropped as bad_tag; the capsule receives nothing of either.
/// </summary>
[Collection("lab")]
public sealed class DataPlaneAuthTests(LabFixture lab)
{
    static readonly string Echo = UdpScripts.Echo(7610);
    static readonly string Send = UdpScripts.Send(7610);

    // UDP payloads (hex) sent from a forged IPv4 source: a raw socket writes the whole IP header (IP_HDRINCL).
    const string Forge = """
        import socket, struct, sys
        src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for h in sys.argv[4:]:
            p = bytes.fromhex(h)
            udp = struct.pack("!HHHH", port, port, 8 + len(p), 0) + p
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                             socket.inet_aton(src), socket.inet_aton(dst))
            s.sendto(ip + udp, (dst, 0))
        """;

    [Fact]
    public async Task Captured_datagrams_replayed_from_a_spoofed_host_address_are_dropped_as_replays()
    {
        var paths = new LabPaths(lab.Name);
        var (h1, h2) = (paths.Underlay(1), paths.Underlay(2));
        var (loc, _) = await lab.Create("rtarget", "h2", "python3", "-c", Echo);
        await lab.Create("rsender", "h1", "sleep", "infinity");
        var pcap = Path.Combine(Path.GetTempPath(), lab.Name + "-replay.pcap");
        try
        {
            await lab.WaitForLog("rtarget", "READY");
            await WarmUp("rsender", "rtarget", loc);
            var captured = await Capture(pcap, h1, h2, 5, () => OneByOne("rsender", "rtarget", loc, "c", 5));
            await LabFixture.Until(async () => Got(await lab.Logs("rtarget"), "c") == 5, "the 5 datagrams to arrive");
            await using var rogue = await RogueMachine.PlugInAsync(lab.Name, "forger", 201);
            var before = await lab.Stats("h2");

            await Forged(rogue, h1, h2, captured);
            await LabFixture.Until(async () => (await lab.Stats("h2"))["drop_replay"] >= before["drop_replay"] + 5,
                "h2 to count the 5 replays");

            var after = await lab.Stats("h2");
            Assert.Equal(before["drop_replay"] + 5, after["drop_replay"]);
            Assert.Equal(before["ingress_packets"], after["ingress_packets"]);
            // A datagram sent after the replays arrives; none of the replayed ones arrived a second time.
            (await lab.InCapsule("rsender", "python3", "-c", Send, loc, "after", "1")).Ok();
            var log = await lab.WaitForLog("rtarget", "GOT after0");
            Assert.Equal(5, Got(log, "c"));
        }
        finally
        {
            await Cleanup(pcap, "rtarget", "rsender");
        }
    }

    [Fact]
    public async Task A_forged_datagram_with_a_good_header_and_a_wrong_tag_is_dropped_as_bad_tag()
    {
        var paths = new LabPaths(lab.Name);
        var (h1, h2) = (paths.Underlay(1), paths.Underlay(2));
        var (loc, _) = await lab.Create("ftarget", "h2", "python3", "-c", Echo);
        await lab.Create("fsender", "h1", "sleep", "infinity");
        var pcap = Path.Combine(Path.GetTempPath(), lab.Name + "-forge.pcap");
        try
        {
            await lab.WaitForLog("ftarget", "READY");
            await WarmUp("fsender", "ftarget", loc);
            var captured = await Capture(pcap, h1, h2, 3, () => OneByOne("fsender", "ftarget", loc, "f", 3));
            await using var rogue = await RogueMachine.PlugInAsync(lab.Name, "forger", 201);
            // Counters far ahead of any sent (so not replays), under the sender's real key id; one byte of
            // each payload changed: the tag cannot match.
            var forged = captured.Select((d, i) =>
            {
                var f = d.ToArray();
                var counter = BinaryPrimitives.ReadUInt64BigEndian(f.AsSpan(12));
                BinaryPrimitives.WriteUInt64BigEndian(f.AsSpan(12), counter + 1_000_000 + (ulong)i);
                f[Wire.HeaderSize] ^= 0x01;
                return f;
            }).ToList();
            var before = await lab.Stats("h2");

            await Forged(rogue, h1, h2, forged);
            await LabFixture.Until(async () => (await lab.Stats("h2"))["drop_bad_tag"] >= before["drop_bad_tag"] + 3,
                "h2 to count the 3 forgeries");

            var after = await lab.Stats("h2");
            Assert.Equal(before["drop_bad_tag"] + 3, after["drop_bad_tag"]);
            Assert.Equal(before["drop_replay"], after["drop_replay"]);
            Assert.Equal(before["ingress_packets"], after["ingress_packets"]);
            // The forgeries did not move the replay window: the sender's next datagrams still arrive.
            (await lab.InCapsule("fsender", "python3", "-c", Send, loc, "after", "1")).Ok();
            await lab.WaitForLog("ftarget", "GOT after0");
        }
        finally
        {
            await Cleanup(pcap, "ftarget", "fsender");
        }
    }

    /// <summary>
    /// Datagrams sent one at a time, each once the last has arrived: datagrams of one size that reach the agent
    /// together leave as one UDP GSO message, which crosses the bridge (and the capture) as one packet.
    /// </summary>
    async Task<Cli.Result> OneByOne(string sender, string target, string loc, string prefix, int count)
    {
        Cli.Result last = default!;
        for (var i = 0; i < count; i++)
        {
            last = (await lab.InCapsule(sender, "python3", "-c", Send, loc, $"{prefix}{i}", "1")).Ok();
            await lab.WaitForLog(target, $"GOT {prefix}{i}0");
        }
        return last;
    }

    /// <summary>Until the keys are in place and a datagram went through.</summary>
    Task WarmUp(string sender, string target, string loc) => LabFixture.Until(async () =>
    {
        await lab.InCapsule(sender, "python3", "-c", Send, loc, "warm", "1");
        return (await lab.Logs(target)).Contains("GOT warm");
    }, "a first datagram to arrive");

    static int Got(string log, string prefix) =>
        log.Split('\n').Count(l => l.StartsWith("GOT " + prefix) && l.Length > 4 + prefix.Length
            && char.IsDigit(l[4 + prefix.Length]));

    /// <summary>
    /// The UDP payloads of the next <paramref name="count"/> overlay datagrams from h1 to h2, captured on the
    /// underlay bridge while <paramref name="traffic"/> runs.
    /// </summary>
    async Task<List<byte[]>> Capture(string pcap, string h1, string h2, int count, Func<Task<Cli.Result>> traffic)
    {
        var capture = Cli.Exec("timeout", ["30", "nsenter", $"--net=/run/netns/{lab.Name}-ul", "--",
            "tcpdump", "-i", "br0", "-n", "-U", "-c", count.ToString(), "-w", pcap,
            $"udp and src host {h1} and dst host {h2} and dst port {Wire.DefaultPort}"]);
        await LabFixture.Until(async () =>
        {
            if (capture.IsCompleted) Assert.Fail($"tcpdump ended before it captured: {(await capture).Err}");
            return File.Exists(pcap);
        }, "tcpdump to attach", seconds: 15);
        (await traffic()).Ok();
        (await capture).Ok();
        return ReadPayloads(pcap);
    }

    /// <summary>A namespace on the underlay bridge with an address of its own, as a machine there would have.</summary>
    static Task Forged(RogueMachine rogue, string from, string to, IEnumerable<byte[]> payloads) =>
        rogue.RunAsync(["python3", "-c", Forge, from, to, Wire.DefaultPort.ToString(),
            .. payloads.Select(Convert.ToHexString)]);

    async Task Cleanup(string pcap, params string[] capsules)
    {
        File.Delete(pcap);
        foreach (var c in capsules) await lab.Run("rm", c);
    }

    /// <summary>UDP payloads of the IPv4 frames of a pcap file (Ethernet link type).</summary>
    static List<byte[]> ReadPayloads(string path)
    {
        var data = File.ReadAllBytes(path);
        var payloads = new List<byte[]>();
        for (var off = 24; off + 16 <= data.Length;)
        {
            var len = (int)BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(off + 8));
            var ip = data.AsSpan(off + 16 + 14, len - 14);
            var udp = ip[((ip[0] & 0xF) * 4)..];
            payloads.Add(udp[8..BinaryPrimitives.ReadUInt16BigEndian(udp[4..])].ToArray());
            off += 16 + len;
        }
        return payloads;
    }
}
