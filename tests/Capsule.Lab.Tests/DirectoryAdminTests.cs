using Capsule.Core;
using Capsule.Dir;
using Capsule.Dir.Etcd;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>`capsule directory init` and `import` against a real etcd server, as an operator runs them.</summary>
public sealed class DirectoryAdminTests(EtcdServer etcd) : IClassFixture<EtcdServer>, IDisposable
{
    readonly string _state = Directory.CreateTempSubdirectory("capsule-dir-").FullName;

    public void Dispose() => Directory.Delete(_state, recursive: true);

    string Members => string.Join(',', etcd.Endpoints);

    [Fact]
    public async Task Init_writes_the_pool_once_and_refuses_another_and_import_carries_an_embedded_state_over()
    {
        var init = await Cli.Exec(Cli.Binary, ["directory", "init", "--etcd", Members, "--pool", "100.64.0.0/24"]);
        Assert.True(init.Code == 0, init.Err);
        Assert.Contains($"--directory etcd:{Members}", init.Out);
        var again = await Cli.Exec(Cli.Binary, ["directory", "init", "--etcd", Members, "--pool", "100.64.0.0/24"]);
        Assert.Equal(0, again.Code);
        var other = await Cli.Exec(Cli.Binary, ["directory", "init", "--etcd", Members, "--pool", "10.9.0.0/16"]);
        Assert.Equal(1, other.Code);
        Assert.Contains("already has pool 100.64.0.0/24", other.Err);
        var bad = await Cli.Exec(Cli.Binary, ["directory", "init", "--etcd", Members, "--pool", "nonsense"]);
        Assert.Equal(1, bad.Code);
        Assert.Contains("is not an IPv4 prefix", bad.Err);

        // An embedded directory's state: two hosts, a running capsule; into the (still empty) etcd directory.
        var embedded = new EmbeddedDirectory(_state, EtcdServer.Pool);
        await embedded.PutHostAsync(new HostRecord("h1", Locator.Parse("198.18.0.1"), "http://198.18.0.1:7471"));
        await embedded.PutHostAsync(new HostRecord("h2", Locator.Parse("198.18.0.2"), "http://198.18.0.2:7471"));
        var a = await embedded.AllocateAsync("a", "h1");
        await embedded.UpdateAsync("a", "h2", CapsuleState.Running, a.Revision);
        var import = await Cli.Exec(Cli.Binary, ["directory", "import", "--etcd", Members, "--state", _state]);
        Assert.True(import.Code == 0, import.Err);
        Assert.Contains("imported 2 hosts and 1 capsules", import.Out);
        var s = await new EtcdDirectory(etcd.Endpoints).SnapshotAsync();
        Assert.Equal(["h1", "h2"], s.Hosts.Keys);
        Assert.Equal(("h2", CapsuleState.Running, a.Locator), (s.Capsules["a"].Host, s.Capsules["a"].State,
            s.Capsules["a"].Locator));
        var twice = await Cli.Exec(Cli.Binary, ["directory", "import", "--etcd", Members, "--state", _state]);
        Assert.Equal(1, twice.Code);
        Assert.Contains("is not empty", twice.Err);
    }
}
