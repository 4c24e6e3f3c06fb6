using Capsule.Core;
using Capsule.Dir;
using Capsule.Dir.Etcd;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// What every directory promises, whatever keeps it: the embedded store and etcd run the same
/// cases. Races are real (concurrent tasks against the real store), not simulated.
/// </summary>
public abstract class DirectoryContract
{
    private protected abstract Task<IDirectory> OpenAsync();

    static HostRecord Host(string name, int i) => new(name, Locator.Parse($"198.18.0.{i}"), $"unix:/{name}");

    async Task<IDirectory> WithHosts()
    {
        var d = await OpenAsync();
        await d.PutHostAsync(Host("h1", 1));
        await d.PutHostAsync(Host("h2", 2));
        return d;
    }

    [Fact]
    public async Task Locators_are_the_lowest_free_and_a_released_one_is_given_again()
    {
        var d = await WithHosts();
        var a = await d.AllocateAsync("a", "h1");
        var b = await d.AllocateAsync("b", "h1");
        Assert.Equal("100.64.0.2", a.Locator.ToString());
        Assert.Equal("100.64.0.3", b.Locator.ToString());
        await d.ReleaseAsync("a");
        Assert.Equal(a.Locator, (await d.AllocateAsync("c", "h2")).Locator);
        var again = await Assert.ThrowsAsync<DirectoryException>(() => d.AllocateAsync("b", "h2"));
        Assert.Contains("already exists", again.Message);
        var nowhere = await Assert.ThrowsAsync<DirectoryException>(() => d.AllocateAsync("d", "h9"));
        Assert.Contains("no host named 'h9'", nowhere.Message);
    }

    [Fact]
    public async Task Concurrent_allocations_never_share_a_locator()
    {
        var d = await WithHosts();
        var recs = await Task.WhenAll(Enumerable.Range(0, 24).Select(i => d.AllocateAsync($"c{i}", "h1")));
        Assert.Equal(24, recs.Select(r => r.Locator).Distinct().Count());
        var state = await d.SnapshotAsync();
        Assert.Equal(24, state.Capsules.Values.Select(c => c.Locator).Distinct().Count());
    }

    [Fact]
    public async Task Of_two_updates_from_one_read_exactly_one_wins_and_the_loser_learns_why()
    {
        var d = await WithHosts();
        var a = await d.AllocateAsync("a", "h1");
        var tries = await Task.WhenAll(new[] { "h1", "h2" }.Select(async h =>
        {
            try
            {
                return (Ok: true, Error: "", Rec: await d.UpdateAsync("a", h, CapsuleState.Running, a.Revision));
            }
            catch (DirectoryException e)
            {
                Assert.True(e.Conflict, e.Message);
                return (Ok: false, Error: e.Message, Rec: (CapsuleRecord?)null);
            }
        }));
        Assert.Single(tries, t => t.Ok);
        Assert.Contains("changed meanwhile", tries.Single(t => !t.Ok).Error);
        var now = (await d.SnapshotAsync()).Capsules["a"];
        Assert.Equal(tries.Single(t => t.Ok).Rec!.Host, now.Host);
        Assert.Equal(now.Revision, tries.Single(t => t.Ok).Rec!.Revision);
        Assert.Equal(a.Locator, now.Locator); // a locator never changes
    }

    [Fact]
    public async Task Host_rules_hold_one_underlay_per_host_and_no_delete_under_a_capsule()
    {
        var d = await WithHosts();
        var taken = await Assert.ThrowsAsync<DirectoryException>(() => d.PutHostAsync(Host("h3", 1)));
        Assert.Contains("already belongs to host 'h1'", taken.Message);
        await d.PutHostAsync(Host("h1", 1)); // the same record again changes nothing
        var a = await d.AllocateAsync("a", "h2");
        var busy = await Assert.ThrowsAsync<DirectoryException>(() => d.DeleteHostAsync("h2"));
        Assert.Contains("still holds capsule 'a'", busy.Message);
        await d.ReleaseAsync("a");
        await d.DeleteHostAsync("h2");
        await d.PutHostAsync(Host("h3", 2)); // its underlay address is free again
        Assert.Equal(["h1", "h3"], (await d.SnapshotAsync()).Hosts.Keys);
        Assert.Equal(a.Locator, (await d.AllocateAsync("b", "h3")).Locator);
    }

    [Fact]
    public async Task A_watcher_gets_the_state_whole_then_each_change_in_order_and_they_add_up()
    {
        var d = await WithHosts();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var watch = d.WatchAsync(cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await watch.MoveNextAsync());
        Assert.True(watch.Current.Full);
        var first = watch.Current.State;
        Assert.Equal(["h1", "h2"], first.Hosts.Keys);
        var a = await d.AllocateAsync("a", "h1");
        var moved = await d.UpdateAsync("a", "h2", CapsuleState.Running, a.Revision);
        await d.AllocateAsync("b", "h1");
        await d.ReleaseAsync("b");
        var last = first;
        var rebuilt = first; // the first state with every change applied, as a watcher keeps it
        while (last.Capsules.ContainsKey("b") || !(last.Capsules.GetValueOrDefault("a") is { Host: "h2" }))
        {
            Assert.True(await watch.MoveNextAsync());
            var u = watch.Current;
            Assert.False(u.Full);
            Assert.True(u.State.Revision > last.Revision, "revisions only grow");
            foreach (var c in u.Changes) rebuilt = rebuilt.Apply(c);
            last = u.State;
        }
        Assert.Equal(moved.Revision, last.Capsules["a"].Revision);
        Assert.Equal(CapsuleState.Running, last.Capsules["a"].State);
        Assert.Equal(last.Capsules.Values, rebuilt.Capsules.Values);
        Assert.Equal(last.Hosts.Values, rebuilt.Hosts.Values);
    }

    [Fact]
    public async Task Bad_names_and_stale_or_missing_revisions_are_refused_in_words()
    {
        var d = await WithHosts();
        var e = await Assert.ThrowsAsync<DirectoryException>(() => d.AllocateAsync("Not A Name", "h1"));
        Assert.Contains("Not A Name", e.Message);
        var a = await d.AllocateAsync("a", "h1");
        e = await Assert.ThrowsAsync<DirectoryException>(() => d.UpdateAsync("a", "h1", CapsuleState.Running, 0));
        Assert.Contains("must name the revision", e.Message);
        await d.UpdateAsync("a", "h1", CapsuleState.Running, a.Revision);
        e = await Assert.ThrowsAsync<DirectoryException>(() =>
            d.UpdateAsync("a", "h2", CapsuleState.Running, a.Revision));
        Assert.True(e.Conflict);
        e = await Assert.ThrowsAsync<DirectoryException>(() => d.ReleaseAsync("zz"));
        Assert.Contains("no capsule named 'zz'", e.Message);
    }
}

public sealed class EmbeddedDirectoryContract : DirectoryContract, IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-dir-").FullName;

    private protected override Task<IDirectory> OpenAsync() =>
        Task.FromResult<IDirectory>(new EmbeddedDirectory(_dir, EtcdServer.Pool));

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}

public sealed class EtcdDirectoryContract(EtcdServer etcd) : DirectoryContract, IClassFixture<EtcdServer>
{
    private protected override async Task<IDirectory> OpenAsync() => await etcd.OpenAsync();
}
