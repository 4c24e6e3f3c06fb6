using System.CommandLine;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Spectre.Console;
using CoreState = Capsule.Core.CapsuleState;

namespace Capsule.Cli;

/// <summary>
/// `capsule ls`: every capsule as the directory records it. With `--wide`, also what each host's agent says of
/// the capsules it runs (issue 13): whose users and root file system they have, their limits, and which
/// namespaces are their own. A host whose agent does not answer shows "?" there, and the list still prints.
/// </summary>
internal static class ListCapsules
{
    public static readonly Option<bool> WideOption = new("--wide", "-w")
    {
        Description = "Also ask each host's agent: a capsule's users (id mapping), root, limits, own namespaces",
    };

    public static async Task<int> RunAsync(Session s, bool json, bool wide, CancellationToken ct)
    {
        var state = await s.Directory.SnapshotAsync(ct);
        var live = wide ? await AskAgentsAsync(s, state, ct) : [];
        var rows = state.Capsules.Values
            .Select(c => Row(state, c, wide, live.GetValueOrDefault((c.Host, c.Name))))
            .ToList();
        if (json)
        {
            Output.WriteJson(rows, CliJson.Default.ListCapsuleRowJson);
            return 0;
        }
        var t = wide
            ? Output.Table("NAME", "LOCATOR", "HOST", "STATE", "USERS", "ROOT", "LIMITS", "OWN NAMESPACES", "")
            : Output.Table("NAME", "LOCATOR", "HOST", "STATE", "");
        foreach (var r in rows)
        {
            var note = Markup.Escape(r.File is not null ? "in " + r.File
                : r.State == CoreState.Stopped.Word() ? r.Detail ?? "" : "");
            if (!wide)
            {
                t.AddRow(r.Name, r.Locator, r.Host, r.State, note);
                continue;
            }
            var known = live.ContainsKey((r.Host, r.Name));
            t.AddRow(r.Name, r.Locator, r.Host, r.State, Markup.Escape(known ? r.Users ?? "host's" : "?"),
                Markup.Escape(known ? r.Root ?? "host's" : "?"),
                Markup.Escape(!known ? "?" : r.Limits is { } l ? InspectCapsule.Limits(l.MemoryBytes, l.CpuMillis,
                    l.Pids) : "none"),
                Markup.Escape(known ? string.Join(' ', r.OwnNamespaces ?? []) : "?"), note);
        }
        AnsiConsole.Write(t);
        return 0;
    }

    // A capsule whose host's agent has been silent longer than its lease (etcd directory) shows as unreachable:
    // it may still run, but nobody can vouch for it now.
    static CapsuleRowJson Row(DirectoryState state, CapsuleRecord c, bool wide, CapsuleInfo? info)
    {
        var suspended = c.State == CoreState.Suspended;
        var row = new CapsuleRowJson(c.Name, c.Locator.ToString(), suspended ? "" : c.Host,
            !suspended && state.Unreachable.Contains(c.Host) ? "unreachable" : c.State.Word(),
            suspended ? CapsuleCommands.SuspendedFile(c.Detail) : null, c.Detail);
        if (!wide || info is null) return row;
        return row with
        {
            Users = info.RootFs is { } r ? $"0-{r.IdCount - 1} -> {r.IdBase}-{(long)r.IdBase + r.IdCount - 1}" : null,
            Root = info.RootFs?.Lower,
            Limits = info.Limits is { } l
                ? new LimitsJson(l.MemoryBytes, l.CpuMillis, l.Pids, [.. info.Cgroups])
                : null,
            OwnNamespaces = [.. info.Namespaces.Where(n => n.Own).Select(n => n.Kind)],
        };
    }

    /// <summary>
    /// Every host's agent at once, each given a few seconds; one that does not answer is left out. Keyed by host
    /// and name: in the middle of a move two agents may both hold a capsule, and the directory says whose it is.
    /// </summary>
    static async Task<Dictionary<(string Host, string Name), CapsuleInfo>> AskAgentsAsync(Session s,
        DirectoryState state, CancellationToken ct)
    {
        var hosts = state.Capsules.Values.Where(c => c.State != CoreState.Suspended).Select(c => c.Host).Distinct();
        var replies = await Task.WhenAll(hosts.Select(async h =>
        {
            try
            {
                var (_, agent) = await s.AgentAsync(h, ct);
                return (await agent.ListAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(5),
                    cancellationToken: ct)).Capsules.ToList();
            }
            catch (Grpc.Core.RpcException)
            {
                return [];
            }
        }));
        return replies.SelectMany(r => r).ToDictionary(i => (i.Host, i.Name));
    }
}
