using System.Globalization;

namespace Capsule.Agent.Linux;

/// <summary>
/// What a capsule may use (`create --memory --cpus --pids`), each limit in a cgroup of the capsule's own. This
/// machine kind has cgroup v1 controllers only (the unified hierarchy offers just hugetlb), so each limit has its
/// own hierarchy: memory.limit_in_bytes, cpu.cfs_quota_us over a 100 ms period, pids.max. A capsule's cgroups
/// sit under the agent's own in each hierarchy (which may itself be confined, as the memory one is here), named
/// after its network namespace, so two hosts of a lab on one machine never share one. CRIU dumps them with the
/// tree and, at the restore, makes them again under the target's name with the same limits
/// (<see cref="RestoreArgs"/>).
/// </summary>
internal sealed record CapsuleLimits(long MemoryBytes, uint CpuMillis, uint Pids)
{
    const string Root = "/sys/fs/cgroup";
    const int CpuPeriodUs = 100_000;

    public bool Any => MemoryBytes > 0 || CpuMillis > 0 || Pids > 0;

    public Protos.Limits ToProto() => new() { MemoryBytes = MemoryBytes, CpuMillis = CpuMillis, Pids = Pids };

    public static CapsuleLimits? From(Protos.Limits? p)
    {
        if (p is null) return null;
        if (p.MemoryBytes < 0) throw new ArgumentException($"a memory limit must be positive (got {p.MemoryBytes})");
        var l = new CapsuleLimits(p.MemoryBytes, p.CpuMillis, p.Pids);
        return l.Any ? l : null;
    }

    public Rpc.SuspendMeta.LimitsMeta ToMeta() => new(MemoryBytes, CpuMillis, Pids);

    public static CapsuleLimits? From(Rpc.SuspendMeta.LimitsMeta? m) =>
        m is null
            ? null
            : From(new Protos.Limits { MemoryBytes = m.MemoryBytes, CpuMillis = m.CpuMillis, Pids = m.Pids });

    /// <summary>
    /// The controllers it needs, each with the file that holds its limit and the value written there.
    /// </summary>
    IEnumerable<(string Controller, string File, string Value)> Settings()
    {
        if (MemoryBytes > 0) yield return ("memory", "memory.limit_in_bytes", Text(MemoryBytes));
        if (CpuMillis > 0) yield return ("cpu", "cpu.cfs_quota_us", Text((long)CpuMillis * CpuPeriodUs / 1000));
        if (Pids > 0) yield return ("pids", "pids.max", Text(Pids));
    }

    static string Text(long n) => n.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The capsule's cgroup folders (one per controller it needs), named after <paramref name="netns"/>.
    /// </summary>
    public IEnumerable<string> Folders(string netns) =>
        Settings().Select(s => Path.Combine(Root, s.Controller) + Relative(s.Controller, netns));

    /// <summary>Its cgroup in a hierarchy, as /proc/PID/cgroup and CRIU name it: below the agent's own.</summary>
    static string Relative(string controller, string netns) => $"{Own(controller).TrimEnd('/')}/{netns}";

    /// <summary>
    /// Makes its cgroups with their limits and puts process <paramref name="pid"/> (not yet started) in them.
    /// </summary>
    public void Apply(string netns, int pid)
    {
        foreach (var (controller, file, value) in Settings())
        {
            var dir = Path.Combine(Root, controller) + Relative(controller, netns);
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, file), value);
            File.WriteAllText(Path.Combine(dir, "cgroup.procs"), Text(pid));
        }
    }

    /// <summary>For `criu restore`: each of its cgroups made again under this host's name for it.</summary>
    public IEnumerable<string> RestoreArgs(string netns) =>
        Settings().SelectMany(s => (string[])["--cgroup-root", $"{s.Controller}:{Relative(s.Controller, netns)}"]);

    /// <summary>Removes its cgroups once its processes are gone; a cgroup still busy a second later stays.</summary>
    public async Task RemoveAsync(string netns)
    {
        foreach (var dir in Folders(netns))
            for (var i = 0; i < 100 && Directory.Exists(dir); i++)
            {
                try { Directory.Delete(dir); }
                catch (IOException) { await Task.Delay(10); } // EBUSY: a process on its way out
            }
    }

    /// <summary>Refuses at once what this host cannot enforce, rather than a capsule without its limits.</summary>
    public void Check()
    {
        foreach (var (controller, _, _) in Settings())
            if (!Directory.Exists(Path.Combine(Root, controller)) || Own(controller).Length == 0)
                throw new InvalidOperationException($"this host has no cgroup v1 {controller} controller at " +
                    $"{Root}/{controller}: the capsule's limit cannot be enforced");
    }

    /// <summary>The agent's own cgroup in a v1 hierarchy ("4:memory:/process_api/…"), "" if there is none.</summary>
    static string Own(string controller)
    {
        foreach (var line in File.ReadLines("/proc/self/cgroup"))
        {
            var parts = line.Split(':', 3);
            if (parts.Length == 3 && parts[1].Split(',').Contains(controller)) return parts[2];
        }
        return "";
    }
}
