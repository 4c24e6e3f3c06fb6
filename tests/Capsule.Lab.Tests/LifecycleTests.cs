using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>Capsule life cycle and the CLI's answers to bad requests, through the real binary.</summary>
[Collection("lab")]
public sealed class LifecycleTests(LabFixture lab)
{
    [Fact]
    public async Task Create_ls_exec_logs_rm_and_clear_errors()
    {
        var (loc, pid) = await lab.Create("life", "h1", "sh", "-c",
            "echo hello-from-capsule; echo oops >&2; exec sleep infinity");
        try
        {
            Assert.True(pid > 0);
            var ls = (await lab.Run("ls", "--json")).Ok();
            using (var doc = JsonDocument.Parse(ls.Out))
            {
                var me = doc.RootElement.EnumerateArray().Single(e => e.GetProperty("name").GetString() == "life");
                Assert.Equal(loc, me.GetProperty("locator").GetString());
                Assert.Equal("h1", me.GetProperty("host").GetString());
                Assert.Equal("running", me.GetProperty("state").GetString());
            }

            // Its own namespaces: the locator on eth0, its name as hostname, PID 1 of its own PID namespace.
            Assert.Contains(loc,
                (await lab.InCapsule("life", "ip", "-4", "-o", "addr", "show", "dev", "eth0")).Ok().Out);
            Assert.Equal("life", (await lab.InCapsule("life", "hostname")).Ok().Out.Trim());
            var status = await File.ReadAllLinesAsync($"/proc/{pid}/status");
            Assert.Equal("1",
                status.Single(l => l.StartsWith("NSpid:")).Split('\t', ' ').Last()); // PID 1 in its namespace
            var stat = (await File.ReadAllTextAsync($"/proc/{pid}/stat")).Split(") ")[1].Split(' ');
            Assert.Equal(pid.ToString(), stat[3]); // session id == its pid: a session leader
            Assert.Equal(3, (await lab.InCapsule("life", "sh", "-c", "exit 3")).Code); // exit code passes through

            // Each stream reaches its log file in its own time: wait for each (both were written at start).
            Assert.DoesNotContain("oops", await lab.WaitForLog("life", "hello-from-capsule"));
            Assert.DoesNotContain("hello", await lab.WaitForLog("life", "oops", stderr: true));

            var dup = await lab.Run("create", "life", "--host", "h2", "--", "true");
            Assert.Equal(1, dup.Code);
            Assert.Contains("already exists", dup.Err);
        }
        finally
        {
            (await lab.Run("rm", "life")).Ok();
        }
        var gone = await lab.Run("exec", "life", "--", "true");
        Assert.Equal(1, gone.Code);
        Assert.Contains("no capsule named 'life'", gone.Err);
        Assert.False(File.Exists($"/run/netns/{lab.Name}-h1-c-life"));

        var noHost = await lab.Run("create", "x", "--host", "h9", "--", "true");
        Assert.Equal(1, noHost.Code);
        Assert.Contains("no host named 'h9'", noHost.Err);

        var badName = await lab.Run("create", "Bad_Name", "--host", "h1", "--", "true");
        Assert.Equal(1, badName.Code);
        Assert.Contains("lower-case", badName.Err);

        // A failed create leaves nothing behind: no namespace, no directory entry.
        var failing = await lab.Run("create", "dies", "--host", "h1", "--", "/nonexistent/program");
        Assert.Equal(1, failing.Code);
        Assert.Contains("/nonexistent/program", failing.Err);
        Assert.False(File.Exists($"/run/netns/{lab.Name}-h1-c-dies"));
        Assert.DoesNotContain("\"dies\"", (await lab.Run("ls", "--json")).Ok().Out);
    }

    [Fact]
    public async Task Bad_command_lines_say_what_to_do()
    {
        var r = await Cli.Run("nolab", "ls");
        Assert.Equal(1, r.Code);
        Assert.Contains("capsule lab up", r.Err);

        r = await Cli.Run("Bad-Lab", "ls");
        Assert.Equal(1, r.Code);
        Assert.Contains("lab name", r.Err);

        r = await Cli.Exec(Cli.Binary, ["create", "x"]);
        Assert.NotEqual(0, r.Code);
        Assert.Contains("--host", r.Err + r.Out);
    }
}
