namespace Capsule.Core;

/// <summary>What a host reports of itself for placement: its free memory and CPU, and its capsules.</summary>
public sealed record HostLoad(string Name, long FreeMemoryBytes, double FreeCpus, int Capsules)
{
    /// <summary>Cordoned hosts and gateways take no capsule; they are left out of every choice.</summary>
    public bool Eligible { get; init; } = true;
}

/// <summary>A capsule to place: its name and the memory it uses now (its processes' resident set).</summary>
public sealed record PlacementItem(string Capsule, long MemoryBytes);

/// <summary>One capsule's target, or why no host can take it.</summary>
public sealed record PlacementChoice(string Capsule, string? Host, string? Why);

/// <summary>
/// Where a drained host's capsules go (docs/drain.md, "Placement"). A host can take a capsule when it is
/// not the drained host, is eligible (not cordoned, not a gateway) and keeps at least
/// <see cref="MemoryReserve"/> free after taking the capsule's memory. Among those: the fewest capsules first
/// (a drain spreads its capsules evenly), then the most free memory, then the most free CPU, then the name (so
/// the same loads always give the same plan). Capsules are placed largest first, each choice counting what
/// the earlier ones added, so one plan never overfills a host.
/// </summary>
public static class Placement
{
    /// <summary>What a host keeps free for itself beyond the capsules it takes: 64 MiB.</summary>
    public const long MemoryReserve = 64L << 20;

    public static bool Fits(HostLoad h, string from, long memory) =>
        h.Eligible && h.Name != from && h.FreeMemoryBytes - memory >= MemoryReserve;

    /// <summary>The best host for one capsule of <paramref name="memory"/> bytes, or null when none fits.</summary>
    public static HostLoad? Choose(IEnumerable<HostLoad> hosts, string from, long memory) =>
        hosts.Where(h => Fits(h, from, memory))
            .OrderBy(h => h.Capsules)
            .ThenByDescending(h => h.FreeMemoryBytes)
            .ThenByDescending(h => h.FreeCpus)
            .ThenBy(h => h.Name, StringComparer.Ordinal)
            .FirstOrDefault();

    /// <summary>Targets for every capsule of <paramref name="from"/>, in the order they should move.</summary>
    public static IReadOnlyList<PlacementChoice> Plan(IEnumerable<HostLoad> hosts, string from,
        IEnumerable<PlacementItem> capsules)
    {
        var loads = hosts.ToDictionary(h => h.Name);
        var plan = new List<PlacementChoice>();
        var order = capsules.OrderByDescending(x => x.MemoryBytes).ThenBy(x => x.Capsule, StringComparer.Ordinal);
        foreach (var c in order)
        {
            var best = Choose(loads.Values, from, c.MemoryBytes);
            if (best is null)
            {
                plan.Add(new(c.Capsule, null, Why(loads.Values, from, c)));
                continue;
            }
            loads[best.Name] = best with
            {
                Capsules = best.Capsules + 1, FreeMemoryBytes = best.FreeMemoryBytes - c.MemoryBytes,
            };
            plan.Add(new(c.Capsule, best.Name, null));
        }
        return plan;
    }

    static string Why(IEnumerable<HostLoad> hosts, string from, PlacementItem c)
    {
        var open = hosts.Where(h => h.Eligible && h.Name != from).ToList();
        if (open.Count == 0)
            return $"no host can take capsule '{c.Capsule}': every other host is cordoned, a gateway, or not listed";
        var most = open.Max(h => h.FreeMemoryBytes);
        return $"no host has room for capsule '{c.Capsule}' ({c.MemoryBytes >> 20} MiB): the most free memory " +
            $"on a host that may take it is {most >> 20} MiB, and each keeps {MemoryReserve >> 20} MiB for itself";
    }
}
