using Capsule.Cli;

namespace Capsule.Lab;

/// <summary>
/// Where a lab on this machine serves, for the CLI's --lab (<see cref="Session.Labs"/>): its directory's control
/// socket (or its etcd, from the lab's record) and its agents' control sockets.
/// </summary>
public sealed class LabTargets : ILabTargets
{
    public string? NameError(string lab) => LabPaths.NameError(lab);

    public string DirectoryEndpoint(string lab)
    {
        var paths = new LabPaths(lab);
        return File.Exists(paths.DirectorySocket) ? paths.DirectoryEndpoint
            : new LabRunner(paths).Load() is { EtcdMembers.Count: > 0 } etcdLab ? etcdLab.Directory
            : throw new UserError($"lab '{paths.Name}' is not up (no directory at {paths.DirectorySocket}); " +
                $"start it with `capsule lab up`{(paths.Name == LabPaths.DefaultName ? "" : " --lab " + paths.Name)}");
    }

    public string? AgentEndpoint(string lab, string host)
    {
        var paths = new LabPaths(lab);
        return File.Exists(paths.AgentSocket(host)) ? paths.AgentEndpoint(host) : null;
    }
}

/// <summary>A CLI session's lab, as the lab layer sees it.</summary>
internal static class SessionPaths
{
    extension(Session session)
    {
        /// <summary>Where the session's lab keeps things.</summary>
        public LabPaths Paths => new(session.Lab);
    }
}
