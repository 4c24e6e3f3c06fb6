using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A lab whose directory is a three-member etcd cluster on h1..h3: a migration that loses a member
/// half-way still completes with its stream whole, and a host whose agent falls silent shows as
/// unreachable until it speaks again.
/// </summary>
[Collection("lab")]
public sealed class EtcdLabTests(EtcdLabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    [Fact]
    public async Task A_migration_during_which_an_etcd_member_is_killed_completes_and_loses_no_byte()
    {
        var (srv, _) = await lab.Create("ksrv", "h2", Stream("server", "7050"));
        await lab.WaitForLog("ksrv", "LISTENING");
        await lab.Create("kcli", "h3", Stream("client", srv, "7050", "10"));
        try
        {
            await lab.WaitForLog("kcli", "PROGRESS sent=");
            // The source waits before it switches the directory over, and h1's member (the one every
            // agent speaks to first) dies meanwhile: the switch must find another member.
            await FaultLab.Arm(lab, "h2", "source.before-switch", "delay", 2000);
            var moving = lab.Migrate("ksrv", "h1");
            await lab.WaitForState("ksrv", "migrating");
            lab.KillEtcdMember("h1");
            var r = await moving;
            Assert.True(r.GetProperty("ok").GetBoolean(), r.ToString());
            Assert.Equal("h1", r.GetProperty("host").GetString());
            var done = (await lab.WaitForLog("kcli", "DONE")).Split('\n').Single(l => l.StartsWith("DONE"));
            var sent = long.Parse(done.Split(' ')[1][5..]);
            Assert.Contains($"echoed={sent}", done);
            Assert.DoesNotContain("ERROR", await lab.Logs("ksrv"));
            Assert.Contains("\"host\": \"h1\"", (await lab.Run("ls", "--json")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "kcli");
            await lab.Run("rm", "ksrv");
        }
    }

    [Fact]
    public async Task A_host_whose_agent_is_silent_past_its_lease_shows_unreachable_and_comes_back()
    {
        await lab.Create("quiet", "h3", "sleep", "infinity");
        var agent = FaultLab.AgentPid(lab, "h3");
        try
        {
            // Stopped, not killed: its supervisor would start a new agent at once.
            Agent.Linux.Native.kill(agent, 19); // SIGSTOP
            await lab.WaitForState("quiet", "unreachable", 30);
            Agent.Linux.Native.kill(agent, 18); // SIGCONT: it renews, finds its lease gone, takes a new one
            await lab.WaitForState("quiet", "running", 30);
        }
        finally
        {
            Agent.Linux.Native.kill(agent, 18);
            await lab.Run("rm", "quiet");
        }
    }
}
