using System.Globalization;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Agent.Drain;

/// <summary>
/// What placement reads: this host's free memory and CPU from /proc, its capsule count, a capsule's resident
/// memory (its whole process tree), and the same of other hosts through their agents' Load call.
/// </summary>
internal sealed class HostLoads(AgentOptions options, CapsuleRuntime runtime)
{
    public HostLoadReply Local()
    {
        var cpus = Environment.ProcessorCount;
        return new HostLoadReply
        {
            Host = options.Host, FreeMemoryBytes = MemAvailable(), Cpus = cpus,
            FreeCpus = Math.Max(0, cpus - LoadAverage()), Capsules = runtime.All.Count,
        };
    }

    /// <summary>Each host's load as its agent reports it; one that does not answer within 3 s takes nothing.</summary>
    public static async Task<HostLoad> OfAsync(HostRecord h, CancellationToken ct)
    {
        try
        {
            var agent = new HostAgent.HostAgentClient(Channels.For(h.AgentEndpoint));
            var r = await agent.LoadAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(3), cancellationToken: ct);
            return new HostLoad(h.Name, r.FreeMemoryBytes, r.FreeCpus, r.Capsules)
                { Eligible = !h.Cordoned && !h.IsGateway };
        }
        catch (RpcException)
        {
            return new HostLoad(h.Name, 0, 0, 0) { Eligible = false };
        }
    }

    /// <summary>The resident memory of a process and all its descendants, in bytes (0 if it is gone).</summary>
    public static long TreeMemory(int root)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid) || ParentOf(pid) is not { } parent) continue;
            if (!children.TryGetValue(parent, out var list)) children[parent] = list = [];
            list.Add(pid);
        }
        long total = 0;
        var todo = new Stack<int>([root]);
        while (todo.TryPop(out var pid))
        {
            total += Resident(pid);
            foreach (var c in children.GetValueOrDefault(pid) ?? []) todo.Push(c);
        }
        return total;
    }

    static int? ParentOf(int pid)
    {
        var stat = Read($"/proc/{pid}/stat");
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields count from the last ')'.
        var close = stat?.LastIndexOf(')') ?? -1;
        if (close < 0) return null;
        var fields = stat![(close + 2)..].Split(' ');
        return fields.Length > 1 && int.TryParse(fields[1], out var ppid) ? ppid : null;
    }

    static long Resident(int pid)
    {
        var statm = Read($"/proc/{pid}/statm")?.Split(' ');
        return statm is { Length: > 1 } && long.TryParse(statm[1], out var pages)
            ? pages * Environment.SystemPageSize
            : 0;
    }

    static long MemAvailable()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
            if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1],
                    CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    static double LoadAverage() =>
        double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);

    /// <summary>A file of a process that may end at any moment: null once it has.</summary>
    static string? Read(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
