namespace Capsule.Lab;

/// <summary>
/// Where a lab keeps things. Every namespace a lab makes starts with its name and a dash, which is
/// how `lab down` finds all of them even when the lab's own record was lost in a crash.
/// </summary>
public sealed record LabPaths(string Name)
{
    public const string DefaultName = Cli.CommandTree.DefaultLab;
    public const string UnderlaySubnet = "198.18.0"; // RFC 2544 benchmarking range: never a real network
    public const string Pool = "100.64.0.0/16";
    /// <summary>The ordinary hosts' segment (RFC 5737 documentation range), behind the gateway.</summary>
    public const string LegacySubnet = "198.51.100";
    public const string LegacyNet = LegacySubnet + ".0/24";
    public const string GatewayLegacyAddress = LegacySubnet + ".1";
    public const string GatewayUnderlay = UnderlaySubnet + ".250";
    public const string GatewayName = "gw";

    public string RunDir => $"/run/capsule/labs/{Name}";
    public string StateDir => $"/var/lib/capsule/labs/{Name}";
    /// <summary>The lab's hold spools, in memory (tmpfs), a folder per host: see the agent's --hold-spool.</summary>
    public string SpoolDir => $"/dev/shm/capsule-labs/{Name}";
    public string HoldSpool(string host) => Path.Combine(SpoolDir, host);
    public string RecordFile => Path.Combine(RunDir, "lab.json");
    /// <summary>
    /// The lab's cluster CA (`capsule cluster init --dir`), with every host's certificates under hosts/.
    /// </summary>
    public string CaDir => Path.Combine(RunDir, "ca");
    public string DirectorySocket => Path.Combine(RunDir, "directory.sock");
    public string DirectoryEndpoint => "unix:" + DirectorySocket;
    public string DirectoryPidFile => Path.Combine(RunDir, "directory.pid");
    public string DirectoryLog => Path.Combine(RunDir, "directory.log");
    public string DirectorySupervisorPidFile => Path.Combine(RunDir, "directory" + SupervisorPidSuffix);
    public string EtcdDataDir(string host) => Path.Combine(StateDir, "etcd", host);
    public string EtcdPidFile(string host) => Path.Combine(RunDir, $"etcd-{host}.pid");
    public string EtcdLog(string host) => Path.Combine(RunDir, $"etcd-{host}.log");
    public string EtcdSupervisorPidFile(string host) => Path.Combine(RunDir, $"etcd-{host}" + SupervisorPidSuffix);
    public string DirectoryConfigFile => Path.Combine(RunDir, "directory", "directory.json");
    /// <summary>
    /// The directory runs on a host of its own on the underlay, and agents reach it there over TCP, as on
    /// real hosts; the CLI, outside every lab namespace, uses its control socket (<see cref="DirectorySocket"/>).
    /// </summary>
    public string DirectoryNetns => $"{Name}-dir";
    public const string DirectoryUnderlay = UnderlaySubnet + ".254";
    public static string DirectoryApi => $"https://{DirectoryUnderlay}:{Dir.DirectoryConfig.DefaultPort}";
    /// <summary>The directory's name in its certificate (its host namespace is {Name}-dir).</summary>
    public const string DirectoryHost = "dir";
    /// <summary>A host's own config file, as /etc/capsule/agent.json is a real host's.</summary>
    public string AgentConfigFile(string host) => Path.Combine(RunDir, host, "agent.json");
    /// <summary>Where agents reach each other: TCP on the underlay, mutual TLS.</summary>
    public static string AgentApi(string underlay) => $"https://{underlay}:{Agent.AgentConfig.DefaultApiPort}";
    public string NetnsPrefix => Name;
    public string UnderlayNetns => $"{Name}-ul";
    public string LegacySegmentNetns => $"{Name}-ls";
    public string LegacyAddress(int index) => $"{LegacySubnet}.{10 + index}";
    public string HostNetns(string host) => $"{Name}-{host}";
    /// <summary>A host agent's control socket: how the CLI and tests, outside the lab's namespaces, reach it.</summary>
    public string AgentEndpoint(string host) => $"unix:{AgentSocket(host)}";
    public string AgentSocket(string host) => $"{RunDir}/{host}.sock";
    public string AgentPidFile(string host) => Path.Combine(RunDir, $"{host}.pid");
    public string AgentLog(string host) => Path.Combine(RunDir, $"{host}.log");
    public string AgentSupervisorPidFile(string host) => Path.Combine(RunDir, host + SupervisorPidSuffix);
    public const string SupervisorPidSuffix = ".supervisor.pid";
    public string HostStateDir(string host) => Path.Combine(StateDir, "hosts", host);
    /// <summary>
    /// The one path at which every simulated host sees its own state folder (a bind mount in that
    /// host's mount namespace). A capsule's files keep their path when it moves, as on real hosts,
    /// yet no two simulated hosts share a disk, so no test passes by accident of one.
    /// </summary>
    public string HostView => Path.Combine(RunDir, "hostview");
    public string Underlay(int index) => $"{UnderlaySubnet}.{index}";

    public bool Owns(string netns) => netns.StartsWith(Name + "-", StringComparison.Ordinal);

    public static string? NameError(string name) =>
        name.Length is >= 1 and <= 8 && char.IsAsciiLetterLower(name[0])
            && name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c))
            ? null
            : $"lab name '{name}' must be 1-8 characters of a-z and 0-9, starting with a letter";
}
