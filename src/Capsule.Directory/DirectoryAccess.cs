using Capsule.Hosting;

namespace Capsule.Dir;

/// <summary>
/// Who may call the directory (issue 10), one line per call: hosts register themselves and the capsules they run,
/// readers only read, admins do anything. Which host may change which record is not checked yet.
/// </summary>
internal static class DirectoryAccess
{
    const Callers HostOrAdmin = Callers.Host | Callers.Admin;

    public static readonly CallerRules Rules = new("/capsule.v1.CapsuleDirectory", new Dictionary<string, Callers>
    {
        ["GetSnapshot"] = Callers.Anyone,
        ["Watch"] = Callers.Anyone,
        ["PutHost"] = HostOrAdmin,
        ["DeleteHost"] = HostOrAdmin,
        ["Allocate"] = HostOrAdmin,
        ["Update"] = HostOrAdmin,
        ["Release"] = HostOrAdmin,
    });
}
