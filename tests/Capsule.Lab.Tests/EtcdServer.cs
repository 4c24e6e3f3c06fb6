using System.Diagnostics;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir.Etcd;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A real etcd cluster of <see cref="Members"/> members for directory tests, in a network namespace
/// of its own (they talk on its loopback); the tests reach each member by a unix socket in a
/// temporary folder. Everything is removed afterwards, also when a test failed.
/// </summary>
public class EtcdServer : IAsyncLifetime
{
    readonly string _netns = "et" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())[..6];
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-etcd-").FullName;
    readonly List<Process?> _members = [];

    protected virtual int Members => 1;
    public static readonly Prefix Pool = Prefix.Parse("100.64.0.0/24");

    public IReadOnlyList<string> Endpoints =>
        [.. Enumerable.Range(0, Members).Select(i => $"unix:{Path.Combine(_dir, $"m{i}.sock:1")}")];

    /// <summary>
    /// A directory on this cluster, under a prefix of its own (so tests never see each other's keys).
    /// </summary>
    internal async Task<EtcdDirectory> OpenAsync(string? prefix = null, TimeSpan? leaseTtl = null)
    {
        var d = new EtcdDirectory(Endpoints, prefix ?? $"/t{Guid.NewGuid():N}/", leaseTtl);
        await d.InitAsync(Pool);
        return d;
    }

    public async Task InitializeAsync()
    {
        await Netns.AddAsync(_netns);
        await Cmd.Ip(_netns, "link", "set", "lo", "up");
        for (var i = 0; i < Members; i++) _members.Add(Start(i));
        // Ready when the cluster takes a write (a leader was elected).
        var probe = new EtcdDirectory(Endpoints, "/probe/");
        await LabFixture.Until(async () =>
        {
            try
            {
                await probe.InitAsync(Pool);
                return true;
            }
            catch (Dir.DirectoryException) { return false; }
        }, "etcd to elect a leader", 60);
    }

    Process Start(int i)
    {
        var cluster = string.Join(',',
            Enumerable.Range(0, Members).Select(m => $"m{m}=http://127.0.0.1:{2380 + 10 * m}"));
        var psi = new ProcessStartInfo("ip") { UseShellExecute = false, WorkingDirectory = _dir };
        foreach (var a in (string[])["netns", "exec", _netns, "etcd", "--name", $"m{i}",
                     "--data-dir", Path.Combine(_dir, $"m{i}"),
                     "--listen-client-urls", $"http://127.0.0.1:{2379 + 10 * i},unix://m{i}.sock:1",
                     "--advertise-client-urls", $"http://127.0.0.1:{2379 + 10 * i}",
                     "--listen-peer-urls", $"http://127.0.0.1:{2380 + 10 * i}",
                     "--initial-advertise-peer-urls", $"http://127.0.0.1:{2380 + 10 * i}",
                     "--initial-cluster", cluster, "--initial-cluster-state", "new",
                     "--log-outputs", Path.Combine(_dir, $"m{i}.log"), "--logger", "zap"])
            psi.ArgumentList.Add(a);
        return Process.Start(psi) ?? throw new InvalidOperationException("could not start etcd");
    }

    /// <summary>Kills member <paramref name="i"/> outright (SIGKILL), as a crash would.</summary>
    public void Kill(int i)
    {
        _members[i]?.Kill();
        _members[i]?.WaitForExit();
        _members[i] = null;
    }

    public async Task DisposeAsync()
    {
        foreach (var p in _members.OfType<Process>())
        {
            p.Kill();
            await p.WaitForExitAsync();
        }
        await Netns.KillAllAsync(_netns);
        await Netns.DeleteAsync(_netns);
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>Three members: one can die and the cluster keeps a quorum.</summary>
public sealed class EtcdCluster3 : EtcdServer
{
    protected override int Members => 3;
}
