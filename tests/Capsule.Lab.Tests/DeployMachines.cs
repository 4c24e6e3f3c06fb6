using System.Diagnostics;
using Capsule.Agent.Linux;

namespace Capsule.Lab.Tests;

/// <summary>
/// Simulated machines for docs/deploy.md: each a network namespace on one segment and a mount namespace of
/// its own, in which the folders a machine keeps to itself (/etc/capsule, /var/lib/capsule, /run/capsule,
/// /run/netns, /usr/local/bin, /etc/systemd/system, /etc/default/etcd, /var/lib/etcd, /dev/shm) are
/// private, so what one machine installs or writes no other sees. The rest of the file system, packages
/// included, is this machine's. A sleeping init process holds both namespaces; commands join them.
/// Disposal kills every process in a machine's mount namespace (its daemons and capsules), then removes
/// the namespaces and folders: nothing is left, also when the test fails.
/// </summary>
public sealed class DeployMachines : IAsyncDisposable
{
    public sealed record Machine(string Name, string Address, string Netns, string Root)
    {
        public int Init { get; set; }
        public string Work => Path.Combine(Root, "work");
        public string Home => Path.Combine(Root, "home");
        public string Journal => Path.Combine(Root, "systemd");
    }

    /// <summary>The folders each machine has for itself, and the file.</summary>
    static readonly string[] PrivateDirs =
    [
        "/etc/capsule", "/var/lib/capsule", "/run/capsule", "/run/netns", "/usr/local/bin", "/etc/systemd/system",
        "/var/lib/etcd", "/dev/shm",
    ];
    const string EtcdDefaults = "/etc/default/etcd";

    readonly string _name = "d" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())[..6];
    readonly Dictionary<string, Machine> _machines = [];
    // Mount points this machine lacked (/etc/capsule on a machine that never ran an agent): made empty for
    // the binds, removed again at the end.
    readonly List<string> _madeMountPoints = [];
    string Segment => $"{_name}-ul";
    string Root => $"/run/capsule-deploy/{_name}";

    public static string Shims => Path.Combine(AppContext.BaseDirectory, "deploy");

    public IReadOnlyDictionary<string, Machine> Machines => _machines;

    /// <summary>Boots the machines; each finds <paramref name="files"/> (path: name) in its working folder.</summary>
    public static async Task<DeployMachines> StartAsync(IEnumerable<(string Name, string Address)> machines,
        IReadOnlyDictionary<string, string> files)
    {
        var lab = new DeployMachines();
        try
        {
            foreach (var d in PrivateDirs.Where(d => !Directory.Exists(d)))
            {
                Directory.CreateDirectory(d);
                lab._madeMountPoints.Add(d);
            }
            await Netns.AddAsync(lab.Segment);
            await Cmd.Ip(lab.Segment, "link", "add", "br0", "type", "bridge");
            await Cmd.Ip(lab.Segment, "link", "set", "br0", "up");
            foreach (var (name, address) in machines)
                await lab.BootAsync(new Machine(name, address, $"{lab._name}-{name}", Path.Combine(lab.Root, name)),
                    files);
            return lab;
        }
        catch
        {
            await lab.DisposeAsync();
            throw;
        }
    }

    async Task BootAsync(Machine m, IReadOnlyDictionary<string, string> files)
    {
        _machines[m.Name] = m;
        await Netns.AddAsync(m.Netns);
        await Cmd.Ip(m.Netns, "link", "add", "eth0", "type", "veth", "peer", "name", m.Name, "netns", Segment);
        await Cmd.Ip(Segment, "link", "set", m.Name, "master", "br0", "up");
        await Cmd.Ip(m.Netns, "addr", "add", m.Address + "/24", "dev", "eth0");
        await Cmd.Ip(m.Netns, "link", "set", "eth0", "up");

        foreach (var d in PrivateDirs) Directory.CreateDirectory(Private(m, d));
        await File.WriteAllTextAsync(Private(m, EtcdDefaults), "");
        foreach (var d in new[] { m.Work, m.Home, m.Journal }) Directory.CreateDirectory(d);
        foreach (var (from, to) in files) await Cmd.RunAsync("cp", ["-a", from, Path.Combine(m.Work, to)]);

        var mounts = string.Join(" && ", PrivateDirs.Append(EtcdDefaults)
            .Select(d => $"mount --bind {Private(m, d)} {d}"));
        var psi = new ProcessStartInfo("nsenter")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in (string[])[$"--net={Netns.Dir}/{m.Netns}", "--", "unshare", "--mount",
                     "--propagation", "private", "--", "sh", "-c", $"{mounts} && echo ready && exec sleep infinity"])
            psi.ArgumentList.Add(a);
        var init = Process.Start(psi)!;
        m.Init = init.Id;
        var ready = await init.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30));
        if (ready != "ready")
            throw new InvalidOperationException(
                $"machine {m.Name} did not boot: {await init.StandardError.ReadToEndAsync()}");
    }

    static string Private(Machine m, string path) =>
        Path.Combine(m.Root, "fs", path.TrimStart('/').Replace('/', '-'));

    /// <summary>
    /// Runs <paramref name="script"/> with sh -e on <paramref name="machine"/>, in a clean environment
    /// (HOST and ADDR set as docs/deploy.md asks) from the machine's working folder.
    /// </summary>
    public Task<Cli.Result> RunAsync(string machine, string script, int timeoutSeconds = 240)
    {
        var m = _machines.TryGetValue(machine, out var found) ? found
            : throw new ArgumentException($"no machine '{machine}'; machines: {string.Join(", ", _machines.Keys)}");
        return Cli.Exec("nsenter", [$"--target={m.Init}", "--mount", "--net", $"--wd={m.Work}", "--",
            "env", "-i", $"PATH={Shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            $"HOME={m.Home}", "LANG=C.UTF-8", $"HOST={m.Name}", $"ADDR={m.Address}", $"SHIM_STATE={m.Journal}",
            "sh", "-ec", script], timeoutSeconds);
    }

    /// <summary>The stand-in journal of a machine: every unit's output, for a failure's message.</summary>
    public string JournalOf(string machine) =>
        string.Join("\n", Directory.GetFiles(_machines[machine].Journal, "*.log").Select(f =>
            $"--- {Path.GetFileName(f)} (last lines)\n" + string.Join('\n', File.ReadLines(f).TakeLast(30))));

    public async ValueTask DisposeAsync()
    {
        foreach (var m in _machines.Values.Where(m => m.Init > 0))
            await KillMountNamespaceAsync(m.Init);
        foreach (var ns in _machines.Values.Select(m => m.Netns).Append(Segment))
        {
            await Netns.KillAllAsync(ns);
            await Netns.DeleteAsync(ns);
        }
        if (Directory.Exists(Root)) Directory.Delete(Root, recursive: true);
        var parent = Path.GetDirectoryName(Root)!;
        if (Directory.Exists(parent) && !Directory.EnumerateFileSystemEntries(parent).Any()) Directory.Delete(parent);
        foreach (var d in _madeMountPoints)
            if (Directory.Exists(d) && !Directory.EnumerateFileSystemEntries(d).Any())
                Directory.Delete(d);
    }

    /// <summary>Kills every process in the mount namespace of <paramref name="init"/>, init last.</summary>
    static async Task KillMountNamespaceAsync(int init)
    {
        string ns;
        try { ns = File.ResolveLinkTarget($"/proc/{init}/ns/mnt", false)?.ToString() ?? ""; }
        catch (IOException) { return; }
        for (var round = 0; round < 100; round++)
        {
            var pids = Directory.GetDirectories("/proc").Select(Path.GetFileName)
                .Select(p => int.TryParse(p, out var pid) ? pid : 0)
                .Where(pid => pid > 0 && pid != Environment.ProcessId && MountNamespace(pid) == ns).ToList();
            if (pids.Count == 0) return;
            foreach (var pid in pids) Native.kill(pid, 9);
            await Task.Delay(20);
        }
    }

    static string? MountNamespace(int pid)
    {
        try { return File.ResolveLinkTarget($"/proc/{pid}/ns/mnt", false)?.ToString(); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }
}
