using Capsule.Core;
using Capsule.Dir;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>The embedded directory on a real disk: durable across a restart, pushes changes to watchers.</summary>
public sealed class DirectoryTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-dir-").FullName;
    static readonly Prefix Pool = Prefix.Parse("100.64.0.0/24");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task State_survives_a_restart()
    {
        var d = new EmbeddedDirectory(_dir, Pool);
        await d.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/x"));
        var a = await d.AllocateAsync("a", "h1");
        await d.UpdateAsync("a", "h1", CapsuleState.Running, a.Revision);
        var b = await d.AllocateAsync("b", "h1");
        await d.ReleaseAsync("b");

        var again = new EmbeddedDirectory(_dir, Pool).State;
        Assert.Equal(d.State.Revision, again.Revision);
        Assert.Equal(a.Locator, again.Capsules["a"].Locator);
        Assert.Equal(CapsuleState.Running, again.Capsules["a"].State);
        Assert.False(again.Capsules.ContainsKey("b"));
        Assert.Equal(Locator.Parse("198.18.0.1"), again.Hosts["h1"].Underlay);
        // The released locator is free again after the restart, the kept one is not.
        Assert.Equal(b.Locator, (await new EmbeddedDirectory(_dir, Pool).AllocateAsync("c", "h1")).Locator);
    }

    [Fact]
    public async Task A_state_file_for_another_pool_or_a_broken_one_is_refused_with_a_clear_message()
    {
        var d = new EmbeddedDirectory(_dir, Pool);
        await d.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/x"));
        var e = Assert.Throws<DirectoryException>(() => new EmbeddedDirectory(_dir, Prefix.Parse("10.0.0.0/16")));
        Assert.Contains("--pool 100.64.0.0/24", e.Message);
        await File.WriteAllTextAsync(Path.Combine(_dir, "directory.json"), "{ not json");
        e = Assert.Throws<DirectoryException>(() => new EmbeddedDirectory(_dir, Pool));
        Assert.Contains("move it aside", e.Message);
    }

    [Fact]
    public async Task Watchers_get_the_state_first_and_then_every_change_pushed()
    {
        var d = new EmbeddedDirectory(_dir, Pool);
        await d.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "unix:/x"));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await using var watch = d.WatchAsync(cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await watch.MoveNextAsync());
        Assert.Equal(1, watch.Current.State.Revision);
        await d.AllocateAsync("a", "h1");
        Assert.True(await watch.MoveNextAsync());
        Assert.True(watch.Current.State.Capsules.ContainsKey("a"));
        var failed = await Assert.ThrowsAsync<DirectoryException>(() => d.AllocateAsync("a", "h1"));
        Assert.Contains("already exists", failed.Message);
        await d.ReleaseAsync("a");
        Assert.True(await watch.MoveNextAsync());
        Assert.False(watch.Current.State.Capsules.ContainsKey("a"));
        Assert.Equal(3, watch.Current.State.Revision); // the failed allocation changed nothing
    }
}
