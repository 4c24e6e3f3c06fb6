using System.Diagnostics;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Dir.Etcd;

namespace Capsule.Lab;

/// <summary>
/// The directory stores `bench directory` compares, each started fresh on a seeded state and removed
/// afterwards, also when the benchmark fails: the embedded directory as its own process (`capsule
/// directory`), and a real etcd server in a network namespace of its own, reached by unix sockets.
/// </summary>
internal static class BenchStores
{
    internal abstract class Store(string folder) : IAsyncDisposable
    {
        public string FolderPath => folder;
        protected string Folder => folder;
        protected Process? Server { get; set; }

        /// <summary>A new client, as each agent has its own.</summary>
        public abstract IDirectory Open();

        public virtual async ValueTask DisposeAsync()
        {
            if (Server is { HasExited: false } p)
            {
                p.Kill();
                await p.WaitForExitAsync();
            }
            Server?.Dispose();
            if (System.IO.Directory.Exists(folder)) System.IO.Directory.Delete(folder, recursive: true);
        }
    }

    sealed class Embedded(string folder) : Store(folder)
    {
        public string Endpoint => "unix:" + Path.Combine(Folder, "directory.sock");
        public override IDirectory Open() => new RemoteDirectory(Endpoint, ownConnection: true);
        public void Start(Process p) => Server = p;
    }

    sealed class Etcd(string folder, string netns) : Store(folder)
    {
        public string Endpoint => "unix:" + Path.Combine(Folder, "etcd.sock:1");
        public override IDirectory Open() => new EtcdDirectory([Endpoint], "/bench/", ownConnections: true);
        public void Start(Process p) => Server = p;

        public override async ValueTask DisposeAsync()
        {
            await base.DisposeAsync();
            await Netns.KillAllAsync(netns);
            await Netns.DeleteAsync(netns);
        }
    }

    /// <summary>Memory-backed, so the disk's speed is not what is measured.</summary>
    static string NewFolder(string kind) =>
        System.IO.Directory.CreateDirectory($"/dev/shm/capsule-bench-{kind}-{Guid.NewGuid():N}"[..40]).FullName;

    public static async Task<Store> EmbeddedAsync(DirectoryState seed, CancellationToken ct)
    {
        var store = new Embedded(NewFolder("dir"));
        try
        {
            Output.Step($"embedded directory with {seed.Capsules.Count} capsules");
            EmbeddedDirectory.WriteState(store.FolderPath, seed);
            var (self, prefix) = Self.Command();
            store.Start(StartQuiet(self, [.. prefix, "directory", "--state", store.FolderPath, "--listen",
                store.Endpoint, "--pool", seed.Pool.ToString()]));
            await ReadyAsync(store.Open(), ct);
            return store;
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    public static async Task<Store> EtcdAsync(DirectoryState seed, CancellationToken ct)
    {
        var netns = "capbd" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())[..6];
        var folder = NewFolder("etcd");
        var store = new Etcd(folder, netns);
        try
        {
            Output.Step($"etcd (one member, netns {netns}) with {seed.Capsules.Count} capsules");
            await Netns.AddAsync(netns);
            await Cmd.Ip(netns, "link", "set", "lo", "up");
            var p = new ProcessStartInfo("ip") { UseShellExecute = false, WorkingDirectory = folder,
                RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in (string[])["netns", "exec", netns, LabEtcd.Binary, "--name", "bench",
                         "--data-dir", Path.Combine(folder, "data"),
                         "--listen-client-urls", "http://127.0.0.1:2379,unix://etcd.sock:1",
                         "--advertise-client-urls", "http://127.0.0.1:2379",
                         "--listen-peer-urls", "http://127.0.0.1:2380",
                         "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                         "--initial-cluster", "bench=http://127.0.0.1:2380",
                         "--log-outputs", Path.Combine(folder, "etcd.log"), "--logger", "zap"])
                p.ArgumentList.Add(a);
            store.Start(Process.Start(p) ?? throw new InvalidOperationException("could not start etcd"));
            var d = (EtcdDirectory)store.Open();
            await ReadyAsync(d, ct, init: seed.Pool);
            await d.ImportAsync(seed, ct);
            return store;
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    static Process StartQuiet(string file, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(file) { UseShellExecute = false, RedirectStandardOutput = true,
            RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Waits (30 s at most) for a store to answer; an etcd one gets its pool on the way.</summary>
    static async Task ReadyAsync(IDirectory d, CancellationToken ct, Prefix? init = null)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                if (init is { } pool) await ((EtcdDirectory)d).InitAsync(pool, ct);
                else await d.SnapshotAsync(ct);
                return;
            }
            catch (DirectoryException) when (clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(100, ct);
            }
        }
    }
}
