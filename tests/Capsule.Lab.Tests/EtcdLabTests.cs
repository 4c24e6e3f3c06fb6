using Capsule.Dir;
using Capsule.Dir.Etcd;
using Etcdserverpb;
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

    [Fact]
    public async Task A_SIGTERMed_agent_revokes_its_lease_and_the_next_agent_takes_a_new_one()
    {
        await lab.Create("calm", "h3", "sleep", "infinity");
        var paths = new LabPaths(lab.Name);
        var etcd = new EtcdCluster(DirectoryClient.EtcdMembers(new LabRunner(paths).Load()!.Directory));
        var lease = await AliveLease(etcd, "h3");
        var agent = FaultLab.AgentPid(lab, "h3");
        try
        {
            Agent.Linux.Native.kill(agent, 15); // SIGTERM: a clean stop
            await LabFixture.Until(() => Task.FromResult(!FaultLab.Alive(agent)), "h3's agent to exit", 30);
            // Revoked on the way out: a lease left to run out would still have most of its 10 s now.
            var left = await etcd.Call((c, t) => c.LeaseTimeToLiveAsync(
                new LeaseTimeToLiveRequest { ID = lease }, cancellationToken: t), CancellationToken.None);
            Assert.Equal(-1, left.TTL); // etcd's answer for a lease it no longer has

            // The supervisor starts the next agent, which takes a lease of its own and vouches for
            // the capsule again; later tests find the host as before.
            await LabFixture.Until(() => Task.FromResult(
                FaultLab.ReadPid(paths.AgentPidFile("h3")) is { } p && p != agent && FaultLab.Alive(p)),
                "a new agent on h3", 30);
            await lab.WaitForState("calm", "running", 30);
            Assert.NotEqual(lease, await AliveLease(etcd, "h3"));
        }
        finally
        {
            await lab.Run("rm", "calm");
        }
    }

    /// <summary>The lease <paramref name="host"/>'s alive key is bound to, read from etcd itself.</summary>
    static async Task<long> AliveLease(EtcdCluster etcd, string host)
    {
        var r = await etcd.Call((c, t) => c.GetAsync(new RangeRequest
            { Key = new EtcdKeys(EtcdKeys.DefaultPrefix).Alive(host) }, cancellationToken: t), CancellationToken.None);
        return Assert.Single(r.Kvs).Lease;
    }
}
