using Capsule.Hosting;

namespace Capsule.Agent;

/// <summary>
/// Who may call the agent (issue 10), one line per call. Admins may do everything, readers only read; hosts make
/// the host-to-host calls of a migration (hold, release, prepare, receive, abort) and may read. The CLI also
/// releases holds (after a failed move), so those calls are open to admins too. Not listed: admins only.
/// </summary>
internal static class AgentAccess
{
    const Callers HostOrAdmin = Callers.Host | Callers.Admin;

    public static readonly CallerRules Rules = new("/capsule.v1.HostAgent", new Dictionary<string, Callers>
    {
        ["Get"] = Callers.Anyone,
        ["List"] = Callers.Anyone,
        ["Logs"] = Callers.Anyone,
        ["Stats"] = Callers.Anyone,
        ["Events"] = Callers.Anyone,
        ["Hold"] = HostOrAdmin,
        ["Release"] = HostOrAdmin,
        ["Prepare"] = HostOrAdmin,
        ["Receive"] = HostOrAdmin,
        ["Stage"] = HostOrAdmin,
        ["Pages"] = HostOrAdmin,
        ["StreamPages"] = HostOrAdmin,
        ["Abort"] = HostOrAdmin,
        ["PeerKey"] = HostOrAdmin,
        ["Create"] = Callers.Admin,
        ["Remove"] = Callers.Admin,
        ["Migrate"] = Callers.Admin,
        ["Suspend"] = Callers.Admin,
        ["FetchSuspended"] = Callers.Admin,
        ["ConfirmSuspended"] = Callers.Admin,
        ["Resume"] = Callers.Admin,
        ["Load"] = Callers.Anyone,
        ["DrainStatus"] = Callers.Anyone,
        ["Cordon"] = Callers.Admin,
        ["Drain"] = Callers.Admin,
        ["StopDrain"] = Callers.Admin,
    });
}
