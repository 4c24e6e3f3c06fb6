using Capsule.Core;
using Capsule.Hosting;
using Grpc.Core;

namespace Capsule.Dir;

/// <summary>
/// Which record a host may change (issue 10), after the role check (<see cref="DirectoryAccess"/>): its own host
/// record; a capsule it allocates on itself; a capsule the directory names it the host of (a migration's source
/// hands its capsule on by one update naming the target). A suspended capsule belongs to no running host: any host
/// may take it, as a resume does (only an admin can ask an agent to resume). Admins change anything.
/// </summary>
internal static class RecordChecks
{
    public static void Host(ServerCallContext context, string record)
    {
        if (HostCaller(context, $"change the record of host {record}") is { } host && host != record)
            throw Caller.Of(context).Denied($"change the record of host {record}: a host changes only its own");
    }

    public static void Allocate(ServerCallContext context, string capsule, string on)
    {
        if (HostCaller(context, $"allocate capsule '{capsule}'") is { } host && host != on)
            throw Caller.Of(context).Denied($"allocate capsule '{capsule}' on host {on}: a host allocates on itself");
    }

    public static void Change(ServerCallContext context, DirectoryState state, string capsule, bool takesSuspended)
    {
        if (HostCaller(context, $"change capsule '{capsule}'") is not { } host) return;
        if (!state.Capsules.TryGetValue(capsule, out var c)) return; // the directory's own "no such capsule"
        if (c.Host == host || (takesSuspended && c.State == CapsuleState.Suspended)) return;
        throw Caller.Of(context).Denied($"change capsule '{capsule}': it is held by host {c.Host}");
    }

    /// <summary>The calling host's name; null for an admin; a refusal for anyone else.</summary>
    static string? HostCaller(ServerCallContext context, string what)
    {
        var caller = Caller.Of(context);
        if (caller.IsAdmin) return null;
        return caller.IsHost(out var host) ? host : throw caller.Denied(what);
    }
}
