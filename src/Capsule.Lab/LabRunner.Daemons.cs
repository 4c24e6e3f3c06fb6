using Capsule.Agent;
using Capsule.Agent.Linux;
using Capsule.Dir;

namespace Capsule.Lab;

/// <summary>
/// How a lab starts its daemons: as real hosts start them, each from a config file of its own
/// (docs/config.md), under `capsule supervise` in the place of systemd's Restart=always.
/// </summary>
internal sealed partial class LabRunner
{
    /// <summary>The directory on a host of its own on the underlay, started from its own config file.</summary>
    async Task BootDirectoryAsync()
    {
        await PlugInAsync(new HostEntry("dir", LabPaths.DirectoryUnderlay, paths.DirectoryEndpoint,
            paths.DirectoryNetns));
        LabConfig.Write(paths.DirectoryConfigFile, new DirectoryConfig
        {
            State = Path.Combine(paths.StateDir, "directory"),
            Listen = LabPaths.DirectoryApi,
            ControlSocket = paths.DirectoryEndpoint,
            Pool = LabPaths.Pool,
            PidFile = paths.DirectoryPidFile,
            Tls = LabTrust.For(paths, LabPaths.DirectoryHost, LabPaths.DirectoryUnderlay, Trust.PeerKind.Directory),
        });
        Self.StartDaemon(paths.DirectoryLog, ["nsenter", $"--net={Netns.Dir}/{paths.DirectoryNetns}", "--",
            .. Self.Supervised("directory", paths.DirectorySupervisorPidFile, paths.DirectoryPidFile,
            ["directory", "--config", paths.DirectoryConfigFile])]);
    }

    /// <summary>
    /// A host's agent, started as on a real host: from the host's own config file, reaching the directory and
    /// the other agents over TCP on the underlay. Its control socket is how the CLI reaches it from outside.
    /// </summary>
    void BootAgent(HostEntry h, string directory)
    {
        Say($"host {h.Name} ({h.Underlay}): agent");
        Directory.CreateDirectory(paths.HostStateDir(h.Name));
        Directory.CreateDirectory(paths.HostView);
        LabConfig.Write(paths.AgentConfigFile(h.Name), new AgentConfig
        {
            Host = h.Name,
            Underlay = h.Underlay,
            Directory = directory,
            Listen = LabPaths.AgentApi(h.Underlay),
            ControlSocket = h.Endpoint,
            State = paths.HostView,
            NetnsPrefix = paths.NetnsPrefix,
            Serves = h.Serves,
            IcmpFrom = h.IcmpFrom,
            HoldSpool = paths.HoldSpool(h.Name),
            Metrics = $"http://{h.Underlay}:{MetricsPort}",
            PidFile = paths.AgentPidFile(h.Name),
            Tls = LabTrust.For(paths, h.Name, h.Underlay),
        });
        // Its own mount namespace (propagation unchanged, so /run/netns stays shared with the
        // machine and `ip netns` sees the capsules) with its own folder bound at the common view.
        // The supervisor runs inside both namespaces, so a restarted agent sees the same host.
        Self.StartDaemon(paths.AgentLog(h.Name), ["nsenter", $"--net={Netns.Dir}/{h.Netns}", "--",
            "unshare", "--mount", "--propagation", "unchanged", "--",
            "sh", "-c", """mount --bind "$1" "$2" && shift 2 && exec "$@" """,
            "sh", paths.HostStateDir(h.Name), paths.HostView,
            .. Self.Supervised("agent", paths.AgentSupervisorPidFile(h.Name), paths.AgentPidFile(h.Name),
            ["agent", "--config", paths.AgentConfigFile(h.Name)])]);
    }
}
