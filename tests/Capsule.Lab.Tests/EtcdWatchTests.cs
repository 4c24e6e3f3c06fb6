using Capsule.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// What only a replicated directory has to get right: a watch that outlives the member it was on,
/// and host liveness by lease. A real three-member etcd cluster; a member dies by SIGKILL.
/// </summary>
public sealed class EtcdWatchTests(EtcdCluster3 etcd) : IClassFixture<EtcdCluster3>
{
    [Fact]
    public async Task A_watch_whose_member_dies_resumes_on_another_and_misses_and_repeats_nothing()
    {
        await using var d = await etcd.OpenAsync();
        await d.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/h1"));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var seen = new List<DirectoryState>();
        var watching = Task.Run(async () =>
        {
            await foreach (var u in d.WatchAsync(cts.Token))
            {
                var s = u.State;
                seen.Add(s);
                if (s.Capsules.Count == 60) return;
            }
        }, cts.Token);
        for (var i = 0; i < 60; i++)
        {
            // The watch starts on the first member, which dies a third of the way through.
            if (i == 20) etcd.Kill(0);
            await d.AllocateAsync($"c{i}", "h1");
        }
        await watching;
        var all = await d.SnapshotAsync();
        Assert.Equal(all.Capsules.Keys, seen[^1].Capsules.Keys);
        Assert.Equal(all.Capsules.Values.Select(c => c.Revision), seen[^1].Capsules.Values.Select(c => c.Revision));
        // Each state the watcher got is newer than the one before: no change applied twice or out of order.
        for (var i = 1; i < seen.Count; i++) Assert.True(seen[i].Revision > seen[i - 1].Revision);
        for (var i = 1; i < seen.Count; i++) Assert.True(seen[i].Capsules.Count >= seen[i - 1].Capsules.Count);
    }

    [Fact]
    public async Task A_host_whose_agent_falls_silent_shows_unreachable_once_its_lease_ends()
    {
        var agent = await etcd.OpenAsync(leaseTtl: TimeSpan.FromSeconds(2));
        var prefix = agent.KeyPrefix;
        await agent.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/h1"));
        var cli = await etcd.OpenAsync(prefix);
        Assert.Empty((await cli.SnapshotAsync()).Unreachable);
        // The agent stops renewing, as one that died would (a clean stop would revoke the lease instead).
        await agent.AbandonLeaseAsync();
        await LabFixture.Until(async () => (await cli.SnapshotAsync()).Unreachable.Contains("h1"),
            "h1 to show unreachable after its 2 s lease", 20);
        Assert.True((await cli.SnapshotAsync()).Hosts.ContainsKey("h1")); // its record stays
        var back = await etcd.OpenAsync(prefix, TimeSpan.FromSeconds(2));
        await back.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/h1"));
        Assert.Empty((await cli.SnapshotAsync()).Unreachable);
        await back.DisposeAsync();
        await agent.DisposeAsync();
    }

    [Fact]
    public async Task A_host_whose_agent_stops_cleanly_shows_unreachable_at_once()
    {
        // The default 10 s lease, not a short one: what ends it here is the revoke, not its time.
        var agent = await etcd.OpenAsync();
        await agent.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/h1"));
        var cli = await etcd.OpenAsync(agent.KeyPrefix);
        Assert.Empty((await cli.SnapshotAsync()).Unreachable);
        await agent.DisposeAsync(); // an agent's clean stop disposes its directory
        Assert.Contains("h1", (await cli.SnapshotAsync()).Unreachable);
        Assert.True((await cli.SnapshotAsync()).Hosts.ContainsKey("h1")); // its record stays
    }
}
