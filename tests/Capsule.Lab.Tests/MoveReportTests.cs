using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Issue 14, items 2-4: `migrate --bandwidth` bounds what a move sends and shows its progress, every move reports
/// each TCP and UDP connection of the capsule, and a target that cannot run the capsule refuses before anything is
/// frozen. Real moves of real programs; the refusal's cause is a real one (a target whose image folder is a
/// tmpfs too small for the image).
/// </summary>
[Collection("lab")]
public sealed class MoveReportTests(LabFixture lab)
{
    static string Tool(string name) => LabFixture.Tool(name);

    [Fact]
    public async Task Bandwidth_bounds_the_rate_of_a_move_and_its_progress_is_shown()
    {
        // 24 MB of memory: at 10 MiB/s its pages alone take over two seconds.
        var (srv, _) = await lab.Create("bw", "h2", "python3", Tool("stream.py"), "server", "7150", "24");
        try
        {
            await lab.WaitForLog("bw", "LISTENING");
            const long rate = 10L << 20;
            var r = await lab.Migrate("bw", "h3", "--bandwidth", "10M");
            Assert.True(r.GetProperty("ok").GetBoolean(), r.ToString());
            Assert.Equal(rate, r.GetProperty("bandwidth_bytes_per_second").GetInt64());
            var bytes = r.GetProperty("image_bytes").GetInt64() + r.GetProperty("staged_bytes").GetInt64();
            var ms = r.GetProperty("phases_ms");
            var sending = ms.GetProperty("stage").GetInt64() + ms.GetProperty("dump").GetInt64() +
                ms.GetProperty("transfer").GetInt64();
            Assert.True(bytes > 20L << 20, r.ToString());
            // A token bucket lets a tenth of a second's worth (and one 1 MiB chunk) go at once; no more.
            var bound = (1L << 20) + rate / 10 + rate * sending / 1000;
            Assert.True(bytes <= bound, $"{bytes} bytes in {sending} ms at 10 MiB/s (bound {bound}): {r}");
            Assert.True(sending >= 1500, $"{bytes} bytes took only {sending} ms at 10 MiB/s: {r}");

            // Back, without --json: the transfer longer than a second shows its percentage, rate and time left.
            var back = await lab.Run("migrate", "bw", "--to", "h2", "--bandwidth", "10M/s");
            Assert.True(back.Code == 0, back.Out + back.Err);
            var progress = back.Out.Split('\n').Where(l => l.Contains("% ") && l.Contains("MiB/s")).ToList();
            Assert.True(progress.Count >= 1, back.Out);
            Assert.Contains(progress, l => l.Contains("s left"));
            var zero = await lab.Run("migrate", "bw", "--to", "h3", "--bandwidth", "0");
            Assert.True(zero.Code != 0 && zero.Err.Contains("is not a rate"), zero.Out + zero.Err);
        }
        finally
        {
            await lab.Run("rm", "bw");
        }
    }

    [Fact]
    public async Task The_report_lists_the_tcp_and_udp_flows_of_a_real_move_with_their_peers()
    {
        // One capsule with a TCP echo server and a UDP receiver; a TCP client and a UDP sender in capsules on h1,
        // and a TCP client on an ordinary host behind the gateway.
        // stream.py's server takes one client at a time: one each.
        var (srv, _) = await lab.Create("rep", "h2", "sh", "-c", $"python3 {Tool("stream.py")} server 7160 & " +
            $"python3 {Tool("stream.py")} server 7162 & exec python3 {Tool("udpseq.py")} recv 7161");
        await LabFixture.Until(async () => (await lab.Logs("rep")).Split("LISTENING").Length >= 3, "both servers");
        var (cli, _) = await lab.Create("repc", "h1", "python3", Tool("stream.py"), "client", srv, "7160", "30");
        var (snd, _) = await lab.Create("reps", "h1", "python3", Tool("udpseq.py"), "send", srv, "7161", "200", "30");
        var legacy = lab.OnHost("l1", "timeout", "60", "python3", Tool("stream.py"), "client", srv, "7162", "20");
        try
        {
            await lab.WaitForLog("repc", "PROGRESS sent=");
            await lab.WaitForLog("reps", "PROGRESS sent=");
            await LabFixture.Until(async () => (await lab.InCapsule("rep", "ss", "-Htn", "state", "established"))
                .Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length >= 2, "both TCP clients connected");
            var r = await lab.Migrate("rep", "h3");
            Assert.True(r.GetProperty("ok").GetBoolean(), r.ToString());
            var flows = r.GetProperty("flows").EnumerateArray().ToList();
            string S(JsonElement f, string p) => f.GetProperty(p).GetString()!;
            var tcp = flows.Where(f => S(f, "protocol") == "tcp").ToList();
            var fromH1 = Assert.Single(tcp, f => S(f, "local").EndsWith(":7160") && S(f, "peer").StartsWith(cli + ":"));
            var fromL1 = Assert.Single(tcp, f => S(f, "local").EndsWith(":7162"));
            Assert.True(flows.Count >= 3, r.ToString());
            var udp = Assert.Single(flows, f => S(f, "protocol") == "udp" && S(f, "local").EndsWith(":7161")
                && S(f, "peer").StartsWith(snd + ":"));
            foreach (var f in (JsonElement[])[fromH1, fromL1, udp])
                Assert.True(f.GetProperty("survived").GetBoolean(), f.ToString());
            Assert.Equal("ESTABLISHED", S(fromH1, "state"));
            // 200 datagrams a second from h1 meet a hold of at least the freeze: h1 held some, and flushed them.
            Assert.Equal("h1", S(udp, "holder"));
            Assert.True(udp.GetProperty("held").GetInt64() > 0, udp.ToString());
            Assert.Equal(udp.GetProperty("held").GetInt64(), udp.GetProperty("flushed").GetInt64());
            Assert.True(udp.GetProperty("stall_ms").GetInt64() > 0, udp.ToString());
            // The gateway speaks for the moving capsule to the ordinary host: a zero window.
            Assert.Equal("gw", S(fromL1, "holder"));
            Assert.True(fromL1.GetProperty("paused").GetBoolean(), fromL1.ToString());
            // The migration's event carries the same report.
            var events = (await lab.Run("events", "--json")).Ok().Out;
            Assert.Contains("\"flows\"", events);
            // The table of --report, on a move back.
            var back = await lab.Run("migrate", "rep", "--to", "h2", "--report");
            Assert.True(back.Code == 0, back.Out + back.Err);
            Assert.Contains("SURVIVED", back.Out);
            Assert.Contains(":7161", back.Out);
            var done = await lab.WaitForLog("repc", "DONE", seconds: 90);
            Assert.DoesNotContain("ERROR", done);
            var l1 = await legacy;
            Assert.True(l1.Code == 0 && l1.Out.Contains("DONE"), l1.Out + l1.Err);
        }
        finally
        {
            await lab.Run("rm", "repc");
            await lab.Run("rm", "reps");
            await lab.Run("rm", "rep");
        }
    }

    [Fact]
    public async Task A_target_without_room_refuses_before_the_freeze_and_the_capsule_runs_on_with_its_stream()
    {
        var (srv, _) = await lab.Create("ref", "h2", "python3", Tool("stream.py"), "server", "7170", "8");
        await lab.WaitForLog("ref", "LISTENING");
        await lab.Create("refc", "h1", "python3", Tool("stream.py"), "client", srv, "7170", "15");
        // The target's folder for incoming images, on a 1 MiB file system of its own, mounted where h3's agent
        // sees it: each simulated host has its own mount namespace, with its state folder at one path.
        var run = $"/run/capsule/labs/{lab.Name}";
        var agent = (await File.ReadAllTextAsync($"{run}/h3.pid")).Trim();
        var folder = $"{run}/hostview/migrations";
        string[] inH3 = ["-t", agent, "-m", "--"];
        (await Cli.Exec("nsenter", [.. inH3, "mkdir", "-p", folder])).Ok();
        (await Cli.Exec("nsenter", [.. inH3, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder])).Ok();
        try
        {
            await lab.WaitForLog("refc", "PROGRESS sent=");
            var pid = await PidOf("ref");
            var r = await lab.Run("migrate", "ref", "--to", "h3");
            Assert.Equal(1, r.Code);
            Assert.Contains("h3 cannot take capsule 'ref'", r.Err);
            Assert.Contains("free", r.Err);
            Assert.Contains("nothing was changed", r.Err);
            // Nothing changed: the same process runs on h2, never frozen, and the stream goes on through it.
            Assert.Contains("\"host\": \"h2\"", (await lab.Run("ls", "--json")).Ok().Out);
            Assert.Equal(pid, await PidOf("ref"));
            var done = await lab.WaitForLog("refc", "DONE", seconds: 60);
            Assert.DoesNotContain("ERROR", done);
            Assert.Contains("refused", (await lab.Run("events", "--json")).Ok().Out);
        }
        finally
        {
            await Cli.Exec("nsenter", [.. inH3, "umount", folder]);
            await lab.Run("rm", "refc");
            await lab.Run("rm", "ref");
        }
    }

    async Task<int> PidOf(string capsule)
    {
        using var doc = JsonDocument.Parse((await lab.Run("inspect", capsule, "--json")).Ok().Out);
        return doc.RootElement.GetProperty("pid").GetInt32();
    }
}
