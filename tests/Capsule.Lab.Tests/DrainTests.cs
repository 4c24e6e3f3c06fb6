using System.Security.Cryptography;
using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// `capsule drain` (issue 14): a host running six capsules, each with live traffic of its own (checksummed
/// TCP streams to and from capsules on the other hosts, an ordinary host's download through the gateway, a UDP
/// stream from the ordinary host), is emptied onto two hosts two moves at a time. Every stream must arrive
/// intact, the host end empty and cordoned, the capsules spread evenly, and a create on it be refused until
/// it is uncordoned.
/// </summary>
[Collection("lab")]
public sealed class DrainTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    static readonly string[] Drained = ["d1", "d2", "d3", "d4", "d5", "d6"];
    static readonly string[] Peers = ["p1", "p2", "p3", "p4"];

    [Fact]
    public async Task Draining_a_host_of_six_busy_capsules_keeps_every_stream_and_leaves_it_empty_and_cordoned()
    {
        var www = Path.Combine(Path.GetTempPath(), lab.Name + "-drain");
        Directory.CreateDirectory(www);
        try
        {
            var want = WriteBlob(www, 80 << 20);
            var traffic = await StartTrafficAsync(www);
            var r = await lab.Run("drain", "h1", "--to", "h2", "--to", "h3", "--parallel", "2", "--json");
            Assert.True(r.Code == 0, $"drain exited {r.Code}: {r.Err}\n{r.Out}");
            using var doc = JsonDocument.Parse(r.Out);
            var report = doc.RootElement;
            Assert.Equal("done", report.GetProperty("state").GetString());
            Assert.Equal(6, report.GetProperty("moved").GetInt32());
            var targets = report.GetProperty("capsules").EnumerateArray()
                .ToDictionary(c => c.GetProperty("capsule").GetString()!, c => c.GetProperty("target").GetString()!);
            Assert.Equal(Drained.Order(), targets.Keys.Order());
            // h2 and h3 each ran two peers before: balanced means three each now.
            Assert.Equal(3, targets.Values.Count(t => t == "h2"));
            Assert.Equal(3, targets.Values.Count(t => t == "h3"));
            Assert.All(report.GetProperty("capsules").EnumerateArray(),
                c => Assert.True(c.GetProperty("bytes").GetInt64() > 0, c.ToString()));

            await CheckTrafficAsync(traffic, want);
            await CheckEmptyAndCordonedAsync(targets);
        }
        finally
        {
            foreach (var c in Drained.Concat(Peers).Append("d7")) await lab.Run("rm", c);
            await lab.Run("uncordon", "h1");
            Directory.Delete(www, recursive: true);
        }
    }

    static string WriteBlob(string www, int size)
    {
        var blob = new byte[size];
        Random.Shared.NextBytes(blob);
        File.WriteAllBytes(Path.Combine(www, "blob"), blob);
        return Convert.ToHexStringLower(SHA256.HashData(blob));
    }

    sealed record Traffic(Task<Cli.Result> Download, Task<Cli.Result> UdpSender);

    /// <summary>
    /// On h1: d1, d2 stream clients of servers p1 (h2), p2 (h3); d3, d4 stream servers of clients p3 (h2), p4 (h3);
    /// d5 a web server l1 downloads from through the gateway; d6 a UDP receiver l1 sends to.
    /// </summary>
    async Task<Traffic> StartTrafficAsync(string www)
    {
        var (p1, _) = await lab.Create("p1", "h2", Stream("server", "7801"));
        var (p2, _) = await lab.Create("p2", "h3", Stream("server", "7802"));
        var (d3, _) = await lab.Create("d3", "h1", Stream("server", "7803"));
        var (d4, _) = await lab.Create("d4", "h1", Stream("server", "7804"));
        foreach (var s in new[] { "p1", "p2", "d3", "d4" }) await lab.WaitForLog(s, "LISTENING");
        await lab.Create("d1", "h1", Stream("client", p1, "7801", "25"));
        await lab.Create("d2", "h1", Stream("client", p2, "7802", "25"));
        await lab.Create("p3", "h2", Stream("client", d3, "7803", "25"));
        await lab.Create("p4", "h3", Stream("client", d4, "7804", "25"));
        var (web, _) = await lab.Create("d5", "h1", "python3", "-m", "http.server", "8091", "--directory", www);
        var tool = LabFixture.Tool("udpseq.py");
        var (rx, _) = await lab.CreateWith("d6", "h1", ["--udp-policy", "buffer"], "python3", tool, "recv", "7805");
        await lab.WaitForLog("d6", "LISTENING");
        await LabFixture.Until(async () =>
            (await lab.OnHost("l1", "curl", "-s", "-o", "/dev/null", "-m", "2", $"http://{web}:8091/")).Code == 0,
            $"http://{web}:8091/ to answer l1", seconds: 30);
        // Paced to span the drain: 80 MB at 5 MB/s, 200 datagrams a second for 20 s.
        var download = lab.OnHost("l1", "sh", "-c",
            $"curl -sS --fail --limit-rate 5M http://{web}:8091/blob | sha256sum");
        var sender = lab.OnHost("l1", "python3", tool, "send", rx, "7805", "200", "20");
        foreach (var c in new[] { "d1", "d2", "p3", "p4" }) await lab.WaitForProgress(c, 1);
        await LabFixture.Until(async () => (await lab.Logs("d6")).Contains("PROGRESS received="), "datagrams at d6");
        return new Traffic(download, sender);
    }

    async Task CheckTrafficAsync(Traffic t, string want)
    {
        foreach (var c in new[] { "d1", "d2", "p3", "p4" })
        {
            var done = (await lab.WaitForLog(c, "DONE")).Split('\n').Single(l => l.StartsWith("DONE"));
            Assert.Contains($"echoed={done.Split(' ')[1][5..]}", done);
        }
        foreach (var s in new[] { "p1", "p2", "d3", "d4" }) Assert.DoesNotContain("ERROR", await lab.Logs(s));
        Assert.Equal(want, (await t.Download).Ok().Out.Split(' ')[0]);
        (await t.UdpSender).Ok();
        var udp = (await lab.WaitForLog("d6", "DONE", seconds: 30)).Split('\n').Single(l => l.StartsWith("DONE"));
        Assert.Contains(" lost=0 ", udp);
        Assert.Contains(" dup=0 ", udp);
    }

    async Task CheckEmptyAndCordonedAsync(Dictionary<string, string> targets)
    {
        using var ls = JsonDocument.Parse((await lab.Run("ls", "--json")).Ok().Out);
        var hosts = ls.RootElement.EnumerateArray()
            .ToDictionary(c => c.GetProperty("name").GetString()!, c => c.GetProperty("host").GetString()!);
        Assert.DoesNotContain("h1", hosts.Values);
        foreach (var (capsule, target) in targets) Assert.Equal(target, hosts[capsule]);
        using var hostList = JsonDocument.Parse((await lab.Run("hosts", "--json")).Ok().Out);
        var h1 = hostList.RootElement.EnumerateArray().Single(h => h.GetProperty("name").GetString() == "h1");
        Assert.True(h1.GetProperty("cordoned").GetBoolean(), h1.ToString());
        Assert.Equal(0, h1.GetProperty("capsules").GetInt32());

        var refused = await lab.Run("create", "d7", "--host", "h1", "--", "sleep", "infinity");
        Assert.NotEqual(0, refused.Code);
        Assert.Contains("cordoned", refused.Err);
        var moveRefused = await lab.Run("migrate", "d1", "--to", "h1");
        Assert.NotEqual(0, moveRefused.Code);
        Assert.Contains("cordoned", moveRefused.Err);

        (await lab.Run("uncordon", "h1")).Ok();
        await lab.Create("d7", "h1", "sleep", "infinity");
    }
}

/// <summary>
/// A drain runs in the agent: started and left by the CLI (--detach), stopped (the move under way finishes, no
/// other starts), shown by --status and events, and resumed by draining again.
/// </summary>
[Collection("lab")]
public sealed class DrainStopTests(LabFixture lab)
{
    static readonly string[] Capsules = ["s1", "s2", "s3", "s4"];

    [Fact]
    public async Task A_stopped_drain_leaves_the_rest_on_the_host_and_draining_again_moves_them()
    {
        try
        {
            // 16 MB each: a move takes long enough that the stop comes while the first one runs.
            for (var i = 0; i < Capsules.Length; i++)
                await lab.Create(Capsules[i], "h1", "python3", LabFixture.Tool("stream.py"), "server", $"{7820 + i}",
                    "16");
            foreach (var c in Capsules) await lab.WaitForLog(c, "LISTENING");
            (await lab.Run("drain", "h1", "--parallel", "1", "--detach", "--json")).Ok();
            (await lab.Run("drain", "h1", "--stop", "--json")).Ok();
            JsonElement status = default;
            await LabFixture.Until(async () =>
            {
                status = JsonDocument.Parse((await lab.Run("drain", "h1", "--status", "--json")).Ok().Out)
                    .RootElement.Clone();
                return status.GetProperty("state").GetString() == "stopped";
            }, "the stopped drain to end");
            var moved = status.GetProperty("moved").GetInt32();
            var left = await OnH1Async();
            Assert.True(left.Count > 0, $"nothing was left to resume: {status}");
            Assert.Equal(Capsules.Length - moved, left.Count);
            Assert.True(status.GetProperty("cordoned").GetBoolean());

            var again = await lab.Run("drain", "h1", "--parallel", "2", "--json");
            Assert.True(again.Code == 0, $"drain exited {again.Code}: {again.Err}\n{again.Out}");
            using var done = JsonDocument.Parse(again.Out);
            Assert.Equal("done", done.RootElement.GetProperty("state").GetString());
            Assert.Equal(left.Count, done.RootElement.GetProperty("moved").GetInt32());
            Assert.Empty(await OnH1Async());

            var all = (await lab.Run("events", "--json")).Ok().Out.Split('\n');
            var events = all.Where(l => l.Contains("\"drain_ended\"")).ToList();
            Assert.Contains(events, e => e.Contains("\"state\":\"stopped\""));
            Assert.Contains(events, e => e.Contains("\"state\":\"done\"") && e.Contains("\"not_moved\":0")
                && e.Contains($"\"moved\":{left.Count}"));
            Assert.Contains(all, e => e.Contains("\"drain_started\"") && e.Contains($"\"capsules\":{left.Count}"));
        }
        finally
        {
            await lab.Run("drain", "h1", "--stop");
            foreach (var c in Capsules) await lab.Run("rm", c);
            await LabFixture.Until(async () => (await lab.Run("uncordon", "h1")).Code == 0, "h1 to be uncordoned");
        }
    }

    async Task<List<string>> OnH1Async()
    {
        using var ls = JsonDocument.Parse((await lab.Run("ls", "--json")).Ok().Out);
        return ls.RootElement.EnumerateArray().Where(c => c.GetProperty("host").GetString() == "h1")
            .Select(c => c.GetProperty("name").GetString()!).ToList();
    }
}
