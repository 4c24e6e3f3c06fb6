using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Post-copy moves (`migrate --memory post-copy`): the capsule resumes on the target before its
/// memory arrives, and CRIU's lazy pages fill it in over the agents' relay. The workload is
/// tools/memwriter.py, which rewrites 200 MB over and over and checks every chunk against the
/// previous pass before it overwrites it: a page that never came (read as zeros) or came stale shows
/// as "ERROR memory". Then the failure the mode trades for its short freeze: an agent killed during
/// the tail loses the capsule, and that is reported (the result, the directory's "stopped" with why),
/// never silent, and no copy of it runs anywhere.
/// </summary>
[Collection("lab")]
public sealed class PostCopyTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    static string[] Writer(string port) => ["python3", LabFixture.Tool("memwriter.py"), port, "200", "100"];

    [Fact]
    public async Task A_capsule_moved_post_copy_there_and_back_keeps_every_page_and_its_stream()
    {
        var (loc, _) = await lab.Create("pc", "h1", Writer("7740"));
        try
        {
            await lab.WaitForLog("pc", "WROTE passes=1");
            await lab.Create("pcc", "h3", Stream("client", loc, "7740", "40"));
            await lab.WaitForStreamProgress("pcc", 0);
            foreach (var to in new[] { "h2", "h1" })
            {
                var m = await lab.Migrate("pc", to, "--memory", "post-copy");
                Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
                Assert.Equal("post-copy", m.GetProperty("memory").GetString());
                // 200 MB of it came after the capsule resumed: the image sent while it was frozen is small.
                Assert.True(m.GetProperty("post_copy_bytes").GetInt64() > 200L << 20, m.ToString());
                Assert.True(m.GetProperty("image_bytes").GetInt64() < 50L << 20, m.ToString());
                Assert.True(m.GetProperty("phases_ms").GetProperty("post_copy_tail").GetInt64() > 0, m.ToString());
                await lab.WaitForProgress("pcc", 500_000);
            }
            // Still writing, and checking what the last pass wrote, on its old host again.
            var passes = MoreFaultTests.Passes(await lab.Logs("pc"));
            await LabFixture.Until(async () => MoreFaultTests.Passes(await lab.Logs("pc")) >= passes + 2,
                "the writer to go on");
            var log = await lab.WaitForLog("pcc", "DONE", seconds: 90);
            var done = log.Split('\n').Single(l => l.StartsWith("DONE")).Split(' ');
            Assert.Equal(done[1]["sent=".Length..], done[2]["echoed=".Length..]);
            Assert.DoesNotContain("ERROR", log);
            Assert.DoesNotContain("ERROR", await lab.Logs("pc"));
        }
        finally
        {
            await lab.Run("rm", "pcc");
            await lab.Run("rm", "pc");
        }
    }

    /// <summary>
    /// target.post-copy-tail: the target's agent dies just after the restore, its lazy-pages daemon
    /// still short of 200 MB. Its wrapper kills the restored tree; the source, its relay gone after the
    /// commit, reports the capsule lost and marks it stopped. source.post-copy-tail: the source's agent
    /// dies after the switch; the target's daemon loses its pages' server, the target kills the capsule
    /// and marks it stopped, with why. In both the source's relay waits 10 ms before each chunk
    /// (source.post-copy-pages), so the tail lasts seconds: unpaced, the daemon can have every page before
    /// the restore even returns (seen: "every page arrived, 0 ms after it resumed"), and nothing is lost.
    /// </summary>
    [Theory]
    [InlineData("h2", "target.post-copy-tail", "h1")]
    [InlineData("h1", "source.post-copy-tail", "h2")]
    public async Task An_agent_killed_in_the_post_copy_tail_loses_the_capsule_and_says_so(string killed, string point,
        string stoppedOn)
    {
        var name = killed == "h1" ? "pcs" : "pct";
        await lab.Create(name, "h1", Writer("7741"));
        try
        {
            await lab.WaitForLog(name, "WROTE passes=1");
            // 200 MB is 800 chunks of 256 KiB or more: at least 8 s of tail, far longer than the switch takes.
            await FaultLab.Arm(lab, "h1", "source.post-copy-pages", "delay", delayMs: 10, times: 100_000);
            await FaultLab.Arm(lab, killed, point, "crash");
            var r = await lab.Run("migrate", name, "--to", "h2", "--memory", "post-copy", "--json");
            Assert.NotEqual(0, r.Code);
            if (r.Out.TrimStart().StartsWith('{'))
            {
                // The source lived to tell: the result says the capsule is lost.
                var m = JsonDocument.Parse(r.Out).RootElement;
                Assert.False(m.GetProperty("ok").GetBoolean());
                Assert.Contains("lost", m.GetProperty("error").GetString());
            }
            var row = await Stopped(name);
            Assert.Equal(stoppedOn, row.GetProperty("host").GetString());
            Assert.Contains("lost", row.GetProperty("detail").GetString());
            // No copy runs anywhere: not the old one, not the one without all its memory.
            foreach (var h in new[] { "h1", "h2" })
            {
                var ns = $"{lab.Name}-{h}-c-{name}";
                await LabFixture.Until(async () => !File.Exists($"/run/netns/{ns}")
                    || (await Cli.Exec("ip", ["netns", "pids", ns])).Out.Trim().Length == 0,
                    $"no process of {name} left on {h}");
            }
        }
        finally
        {
            // The killed agent is back (its supervisor restarts it) before the next test asks it for anything.
            await LabFixture.Until(async () => (await lab.Run("stats", killed)).Code == 0, $"{killed}'s agent back");
            await FaultLab.Clear(lab, "h1");
            await lab.Run("rm", name);
        }
    }

    async Task<JsonElement> Stopped(string name)
    {
        JsonElement? row = null;
        await LabFixture.Until(async () =>
        {
            var r = await lab.Run("ls", "--json");
            row = r.Code == 0 ? FaultLab.FindCapsule(r.Out, name) : null;
            return row?.GetProperty("state").GetString() == "stopped";
        }, $"{name} to be marked stopped", seconds: 90);
        return row!.Value;
    }
}
