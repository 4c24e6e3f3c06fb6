using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A container capsule's failed move (issue 13) leaves it running where it was, its client's stream intact, and
/// nothing of it on the target: not the tree CRIU restored there, nor its root's mounts, nor its network.
/// </summary>
[Collection("lab")]
public sealed class ContainerFaultTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    [Fact]
    public async Task A_move_that_fails_after_the_targets_restore_leaves_it_running_and_nothing_on_the_target()
    {
        var (srv, pid) = await lab.CreateWith("cfail", "h2", ["--rootfs", "/"], Stream("server", "7700"));
        try
        {
            await lab.WaitForLog("cfail", "LISTENING");
            await lab.Create("cfailc", "h1", Stream("client", srv, "7700", "10"));
            await lab.WaitForStreamProgress("cfailc", 0);
            await FaultLab.Arm(lab, "h3", "target.after-restore", "fail");
            var m = await lab.Migrate("cfail", "h3");

            Assert.False(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.True(m.GetProperty("resumed_on_source").GetBoolean(), m.ToString());
            Assert.Equal(pid, m.GetProperty("pid").GetInt32());
            await AssertNothingOn("h3", "cfail");
            await AssertStreamWhole("cfailc");
        }
        finally
        {
            await FaultLab.Clear(lab, "h3");
            await lab.Run("rm", "cfailc");
            await lab.Run("rm", "cfail");
        }
    }

    [Fact]
    public async Task A_source_whose_frozen_container_is_gone_after_a_failed_move_restores_it_from_its_images()
    {
        var (srv, pid) = await lab.CreateWith("cgone", "h2", ["--rootfs", "/"], Stream("server", "7701"));
        try
        {
            await lab.WaitForLog("cgone", "LISTENING");
            await lab.Create("cgonec", "h1", Stream("client", srv, "7701", "10"));
            await lab.WaitForStreamProgress("cgonec", 0);
            await FaultLab.Arm(lab, "h2", "source.after-dump", "delay", delayMs: 8000);
            await FaultLab.Arm(lab, "h3", "target.restore", "fail");
            var move = lab.Migrate("cgone", "h3");
            var done = Path.Combine(new LabPaths(lab.Name).HostStateDir("h2"), "migrations", "cgone", "images",
                "verdict.ready");
            await LabFixture.Until(() => Task.FromResult(File.Exists(done)), "the dump's end", 60);
            // The tree goes while it is frozen (as in a reboot): its network namespace, which CRIU restores from
            // the images, and its root, still mounted, are what the source has left besides the images.
            await Cli.Exec("kill", ["-9", pid.ToString()]);
            var m = await move;

            Assert.False(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.True(m.GetProperty("resumed_on_source").GetBoolean(), m.ToString());
            Assert.NotEqual(pid, m.GetProperty("pid").GetInt32());
            Assert.Contains("0 ", await File.ReadAllTextAsync($"/proc/{m.GetProperty("pid").GetInt32()}/uid_map"));
            await AssertNothingOn("h3", "cgone");
            await AssertStreamWhole("cgonec");
        }
        finally
        {
            await FaultLab.Clear(lab, "h2");
            await FaultLab.Clear(lab, "h3");
            await lab.Run("rm", "cgonec");
            await lab.Run("rm", "cgone");
        }
    }

    [Fact]
    public async Task A_post_copy_move_of_a_container_is_refused_before_anything_happens()
    {
        var (_, pid) = await lab.CreateWith("cpost", "h2", ["--rootfs", "/"], "sleep", "infinity");
        try
        {
            var r = await lab.Run("migrate", "cpost", "--to", "h3", "--memory", "post-copy");

            Assert.NotEqual(0, r.Code);
            Assert.Contains("--memory stop-and-copy; nothing was changed", r.Err);
            var info = (await lab.Run("inspect", "cpost", "--json")).Ok().Out;
            Assert.Contains("\"host\": \"h2\"", info);
            Assert.Contains($"\"pid\": {pid},", info);
        }
        finally
        {
            await lab.Run("rm", "cpost");
        }
    }

    Task AssertNothingOn(string host, string name) => AssertNothingOn(lab, host, name);

    /// <summary>No folder, root mount or network namespace of the container capsule is left on the host.</summary>
    internal static async Task AssertNothingOn(LabFixture lab, string host, string name)
    {
        var paths = new LabPaths(lab.Name);
        var state = paths.HostStateDir(host);
        Assert.False(Directory.Exists(Path.Combine(state, "capsules", name)), $"{name}'s folder is left on {host}");
        Assert.False(Directory.Exists(Path.Combine(state, "roots", name)), $"{name}'s root is left on {host}");
        Assert.False(File.Exists($"/run/netns/{lab.Name}-{host}-c-{name}"), $"{name}'s namespace is left on {host}");
        // The target's agent has its own mount namespace: its root's mounts would show there.
        var agent = (await File.ReadAllTextAsync(paths.AgentPidFile(host))).Trim();
        var mounts = await File.ReadAllTextAsync($"/proc/{agent}/mountinfo");
        Assert.DoesNotContain($"/roots/{name}/", mounts);
    }

    async Task AssertStreamWhole(string client)
    {
        var done = (await lab.WaitForLog(client, "DONE", seconds: 90))
            .Split('\n')
            .Single(l => l.StartsWith("DONE", StringComparison.Ordinal));
        Assert.Contains($"echoed={done.Split(' ')[1][5..]}", done);
    }
}
