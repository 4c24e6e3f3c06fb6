using Capsule.Protos;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>
/// `capsule inspect NAME`: a running capsule as its host's agent sees it, namespaces, id mapping, root and
/// capabilities included (a suspend file is the other thing `inspect` shows, <see cref="SuspendCommands"/>).
/// </summary>
internal static class InspectCapsule
{
    /// <summary>OCI's default capability set, what a capsule with its own root keeps.</summary>
    const ulong OciCapabilities = 0xa80425fb;

    public static async Task<int> RunAsync(Session s, string name, bool json, CancellationToken ct)
    {
        var (_, agent) = await s.CapsuleAsync(name, ct);
        var info = await agent.GetAsync(new NameRequest { Name = name }, cancellationToken: ct);
        var root = info.RootFs is { } r
            ? new RootJson(r.Lower, Upper(info), r.IdBase, r.IdCount)
            : null;
        var namespaces = info.Namespaces.Select(n => new NamespaceJson(n.Kind, n.Inode, n.Own)).ToList();
        if (json)
        {
            var limits = info.Limits is { } l
                ? new LimitsJson(l.MemoryBytes, l.CpuMillis, l.Pids, [.. info.Cgroups])
                : null;
            Output.WriteJson(new CapsuleInspectJson(info.Name, info.Host, info.Locator,
                    info.State.ToString().ToLowerInvariant(), info.Pid, [.. info.Command], root, namespaces,
                    info.Pid == 0 ? null : $"{info.CapBounding:x}", limits),
                CliJson.Default.CapsuleInspectJson);
            return 0;
        }
        var t = Output.Table("", "");
        t.AddRow("capsule", Markup.Escape(info.Name));
        t.AddRow("host", Markup.Escape(info.Host));
        t.AddRow("locator", info.Locator);
        t.AddRow("state", info.Pid == 0 ? info.State.ToString().ToLowerInvariant() : $"running, pid {info.Pid}");
        t.AddRow("command", Markup.Escape(string.Join(' ', info.Command)));
        t.AddRow("users", root is null
            ? "the host's (its root is the host's root)"
            : $"its own: ids 0-{root.IdCount - 1} are host ids {root.IdBase}-{(long)root.IdBase + root.IdCount - 1}");
        t.AddRow("root", Markup.Escape(root is null
            ? "the host's file system"
            : $"an overlay: {root.Lower} below, its own layer {root.Upper} above"));
        t.AddRow("namespaces", namespaces.Count == 0 ? "(not running)" : Markup.Escape(string.Join('\n',
            namespaces.Select(n => $"{n.Kind,-6} {n.Inode,11}  {(n.Own ? "its own" : "the host's")}"))));
        t.AddRow("limits", Markup.Escape(Limits(info.Limits)));
        if (info.Pid != 0)
            t.AddRow("capabilities", info.CapBounding == OciCapabilities
                ? $"{info.CapBounding:x} (a container's: OCI's default set)"
                : $"{info.CapBounding:x}");
        AnsiConsole.Write(t);
        return 0;
    }

    static string Upper(CapsuleInfo info) => Path.Combine(info.StateDir, "upper");

    static string Limits(Protos.Limits? l) => l is null ? "none" : Limits(l.MemoryBytes, l.CpuMillis, l.Pids);

    /// <summary>A capsule's limits in words (also those a suspend file carries).</summary>
    internal static string Limits(long memoryBytes, uint cpuMillis, uint pids)
    {
        var parts = new List<string>();
        if (memoryBytes > 0) parts.Add($"memory {memoryBytes >> 20} MiB");
        if (cpuMillis > 0) parts.Add($"cpu {cpuMillis / 1000.0:0.###} CPUs");
        if (pids > 0) parts.Add($"{pids} processes");
        return parts.Count == 0 ? "none" : string.Join(", ", parts);
    }
}
