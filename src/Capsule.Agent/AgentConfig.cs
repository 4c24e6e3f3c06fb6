using Capsule.Core;
using Capsule.Dir;
using Capsule.Hosting;

namespace Capsule.Agent;

/// <summary>
/// The host agent's settings: `capsule agent --config /etc/capsule/agent.json`. The file is one JSON object
/// whose keys are these properties (case does not matter). Each key can also be set by an environment
/// variable CAPSULE_AGENT__KEY (e.g. CAPSULE_AGENT__HOLDLEASESECONDS=30) and most by a command-line option;
/// the file is read first, then the environment, then the command line, each overriding the one before.
/// docs/config.md lists every key with an example file (deploy/agent.json).
/// </summary>
public sealed class AgentConfig : IDaemonConfig
{
    public const string EnvironmentPrefix = "CAPSULE_AGENT__";

    /// <summary>TCP port of the agent's API when <see cref="Listen"/> is not given.</summary>
    public const int DefaultApiPort = 7471;

    /// <summary>
    /// Required. This host's name in the directory, unique among the hosts: 1-16 characters of a-z, 0-9
    /// and '-', starting with a letter (`capsule create --host NAME` names it). Option --host.
    /// </summary>
    public string? Host { get; set; }

    /// <summary>
    /// Required. This host's IPv4 address on the underlay, the network that joins the hosts: capsule
    /// traffic to and from other hosts is sent from and to it, wrapped in UDP. Option --underlay.
    /// </summary>
    public string? Underlay { get; set; }

    /// <summary>UDP port of host-to-host capsule traffic, alike on every host. Default 7470. Option --port.</summary>
    public int Port { get; set; } = Wire.DefaultPort;

    /// <summary>
    /// MTU of the underlay path between hosts (576-65535). Capsules get this less the wrapping's overhead, so no
    /// wrapped packet is fragmented. Default 1500. Option --underlay-mtu.
    /// </summary>
    public int UnderlayMtu { get; set; } = 1500;

    /// <summary>
    /// Required. Where the directory is: http://HOST:PORT (its Listen) or unix:/path for one on this machine.
    /// Option --directory.
    /// </summary>
    public string? Directory { get; set; }

    /// <summary>
    /// Where the agent serves its gRPC API, and the endpoint the other hosts' agents and the CLI are told
    /// (through the directory) to reach it at: https://ADDRESS:PORT, http://ADDRESS:PORT or unix:/path (one
    /// machine only). Default https://UNDERLAY:7471 with a <see cref="Tls"/> section, else http://UNDERLAY:7471,
    /// which is unauthenticated: then serve it on the underlay or another trusted network only (capsules
    /// themselves cannot reach it: the host's filter drops their packets to the host and the underlay).
    /// Option --listen.
    /// </summary>
    public string? Listen { get; set; }

    /// <summary>
    /// This host's certificates: Ca (the cluster CA's ca.crt), Cert and Key (`capsule host add NAME --address
    /// UNDERLAY`). With them the agent serves https:// only to callers with a certificate of the cluster CA, and
    /// calls other agents, the directory and etcd with its own.
    /// </summary>
    public TlsConfig Tls { get; set; } = new();

    /// <summary>
    /// Also serve the API on this unix socket (unix:/path), for tools on this machine; not told to anyone.
    /// Default: none.
    /// </summary>
    public string? ControlSocket { get; set; }

    /// <summary>
    /// This host's state folder: the capsules' files, migration journals, CRIU work. Keep it across reboots.
    /// Default /var/lib/capsule/agent. Option --state.
    /// </summary>
    public string State { get; set; } = "/var/lib/capsule/agent";

    /// <summary>
    /// Prefix of the network namespaces made for capsules (PREFIX-HOST-c-CAPSULE), so that several agents on one
    /// machine, as in the lab, keep apart. Default "capsule". Option --netns-prefix.
    /// </summary>
    public string NetnsPrefix { get; set; } = "capsule";

    /// <summary>CRIU binary, 4.2.1 or newer. Default /opt/capsule/criu/bin/criu. Option --criu.</summary>
    public string Criu { get; set; } = Checkpoint.Criu.DefaultBinary;

    /// <summary>
    /// Gateway mode: the ordinary networks behind this host, as comma-separated IPv4 prefixes (e.g.
    /// "198.51.100.0/24"); capsules reach them through this host, and they reach capsules. A gateway runs no
    /// capsules. Default "" (an ordinary capsule host). Option --serves.
    /// </summary>
    public string Serves { get; set; } = "";

    /// <summary>
    /// Gateway mode: source address of the ICMP errors this host sends as a router (its address on the
    /// ordinary side). Default "": the underlay address. Option --icmp-from.
    /// </summary>
    public string IcmpFrom { get; set; } = "";

    /// <summary>
    /// Seconds a hold lasts when the migration that asked for it names no lease: the longest a dead migration
    /// source can make this host hold a capsule's packets (more than 0, at most a day). Default 15.
    /// Option --hold-lease.
    /// </summary>
    public double HoldLeaseSeconds { get; set; } = 15;

    /// <summary>
    /// Folder, in memory (tmpfs), where holds keep their packets, so that they outlive an agent restart.
    /// Default /dev/shm/capsule-holds. Option --hold-spool.
    /// </summary>
    public string HoldSpool { get; set; } = AgentOptions.DefaultHoldSpool;

    /// <summary>
    /// Most TCP flows a gateway tracks (to pause its ordinary peers while a capsule moves); when full, the
    /// flows idle longest are forgotten, never a paused one. Default 65536.
    /// </summary>
    public int MaxTcpFlows { get; set; } = Capsule.Agent.DataPlane.Engine.DefaultMaxFlows;

    /// <summary>
    /// Most bytes one incoming image (a capsule migrating here, a suspend file resumed here) may unpack; it is also
    /// never more than the free space of State's file system less 512 MiB. An image past it is refused, and what
    /// it unpacked removed. Default 68719476736 (64 GiB).
    /// </summary>
    public long MaxImageBytes { get; set; } = AgentOptions.DefaultMaxImageBytes;

    /// <summary>Most holds this host keeps at once (for capsules moving from it, or their peers). Default 32.</summary>
    public int MaxHolds { get; set; } = Capsule.Agent.DataPlane.Engine.DefaultMaxHolds;

    /// <summary>Largest hold, in packets (2 KB each), whatever a migration asks for. Default 16384.</summary>
    public int MaxHoldPackets { get; set; } = Capsule.Agent.DataPlane.Engine.DefaultMaxHoldPackets;

    /// <summary>
    /// Longest hold lease in seconds, whatever a migration asks for (its source renews every 2 s); at least
    /// HoldLeaseSeconds. Default 60.
    /// </summary>
    public double MaxHoldLeaseSeconds { get; set; } = Capsule.Agent.DataPlane.Engine.DefaultMaxHoldLease.TotalSeconds;

    /// <summary>
    /// Where to serve Prometheus metrics, http://ADDRESS:PORT (path /metrics; a port of its own, not
    /// Listen's). Default: empty, not served. Option --metrics.
    /// </summary>
    public string Metrics { get; set; } = "";

    /// <summary>
    /// How this host seals the overlay datagrams it sends: "encrypt" (AES-GCM: payload encrypted, header and
    /// payload authenticated) or "authenticate" (payload left readable on the underlay, header and payload
    /// authenticated: forged and replayed datagrams are still refused). Every host opens either. Default "encrypt".
    /// </summary>
    public string DataPlane { get; set; } = "encrypt";

    /// <summary>
    /// The data plane's offloads: a TUN that hands over and takes TCP/UDP super-packets of up to 64 KiB
    /// (IFF_VNET_HDR, TUNSETOFFLOAD), UDP GSO sends and UDP GRO receives. Off, it moves one packet per system
    /// call. Default true.
    /// </summary>
    public bool Offloads { get; set; } = true;

    /// <summary>
    /// Lanes of the data plane: queues of the TUN (IFF_MULTI_QUEUE) and UDP sockets of one SO_REUSEPORT group, each
    /// with an egress and an ingress thread; a flow always on one lane. A lane sends from the agent's port plus its
    /// number, so the underlay must let UDP from ports Port to Port + Lanes - 1 through. 0 (the default): one per
    /// core, at most 64.
    /// </summary>
    public int Lanes { get; set; }

    /// <summary>
    /// Seconds between fresh data-plane keys towards each peer host (at least 1, at most a day). Default 120.
    /// </summary>
    public double KeyRotationSeconds { get; set; } = 120;

    /// <summary>Name of the TUN device the data plane uses (at most 15 characters). Default "cap0".</summary>
    public string Tun { get; set; } = "cap0";

    /// <summary>Write the agent's process id to this file while it runs. Default: none. Option --pid-file.</summary>
    public string? PidFile { get; set; }

    /// <summary>
    /// The least severe messages logged: Trace, Debug, Information, Warning, Error or Critical.
    /// Default Information.
    /// </summary>
    public string LogLevel { get; set; } = "Information";

    public void Complete()
    {
        if (string.IsNullOrEmpty(Listen) && Locator.TryParse(Underlay, out var underlay) && !underlay.IsNone)
            Listen = $"{(Tls.IsEmpty ? "http" : "https")}://{underlay}:{DefaultApiPort}";
    }

    public void Validate(List<string> errors, List<string> warnings)
    {
        if (string.IsNullOrEmpty(Host))
            errors.Add("Host is missing: write this host's name, unique among the hosts (e.g. \"h1\")");
        else if (Names.HostNameError(Host) is { } hostError)
            errors.Add($"Host: {hostError}");
        var underlayOk = Locator.TryParse(Underlay, out var underlay) && !underlay.IsNone;
        if (string.IsNullOrEmpty(Underlay))
            errors.Add("Underlay is missing: write this host's IPv4 address on the network between the hosts");
        else if (!underlayOk)
            errors.Add($"Underlay: '{Underlay}' is not an IPv4 address of this host; write one such as 10.0.0.5");
        if (Port is < 1 or > 65535) errors.Add($"Port: {Port} is not a UDP port; write 1-65535 (default 7470)");
        if (UnderlayMtu is < 576 or > 65535)
            errors.Add($"UnderlayMtu: {UnderlayMtu} must be between 576 and 65535 (default 1500)");
        ConfigRules.Connect(errors, "Directory", Directory, "the directory");
        // Without a usable Underlay there is no default Listen, and the Underlay's own error says what to fix.
        if (underlayOk || !string.IsNullOrEmpty(Listen))
            ConfigRules.Serve(errors, "Listen", Listen, advertised: true);
        ConfigRules.Tls(errors, Tls, Listen);
        if (Listen?.StartsWith("unix:", StringComparison.Ordinal) == true)
            warnings.Add($"Listen is a unix socket ({Listen}): agents on other machines cannot reach " +
                "this one, so capsules cannot migrate between machines");
        ConfigRules.Socket(errors, "ControlSocket", ControlSocket);
        ConfigRules.AbsolutePath(errors, "State", State, required: true);
        if (Names.HostNameError(NetnsPrefix) is not null)
            errors.Add($"NetnsPrefix: '{NetnsPrefix}' must be 1-16 characters of a-z, 0-9 and '-', " +
                "starting with a letter");
        if (!File.Exists(Criu))
            warnings.Add($"Criu: {Criu} does not exist; migrate and suspend will fail (scripts/install-criu.sh)");
        foreach (var p in Serves.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            if (!Prefix.TryParse(p, out _))
                errors.Add($"Serves: '{p}' is not an IPv4 prefix; write networks such as 198.51.100.0/24, " +
                    "comma-separated");
        if (IcmpFrom.Length > 0 && !Locator.TryParse(IcmpFrom, out _))
            errors.Add($"IcmpFrom: '{IcmpFrom}' is not an IPv4 address; write this gateway's ordinary-side address");
        var most = global::Capsule.Agent.DataPlane.Engine.MaxLease.TotalSeconds;
        if (!(HoldLeaseSeconds > 0) || HoldLeaseSeconds > most)
            errors.Add($"HoldLeaseSeconds: {HoldLeaseSeconds} must be more than 0 and at most {most} (default 15)");
        ConfigRules.AbsolutePath(errors, "HoldSpool", HoldSpool, required: true);
        ValidateBounds(errors, most);
        if (Tun.Length is 0 or > 15 || Tun.Any(c => c is '/' or ':' || char.IsWhiteSpace(c)))
            errors.Add($"Tun: '{Tun}' is not a device name; write 1-15 characters without '/', ':' or spaces");
        ConfigRules.AbsolutePath(errors, "PidFile", PidFile, required: false);
        if (DataPlane is not ("encrypt" or "authenticate"))
            errors.Add($"DataPlane: '{DataPlane}' is not a mode; write \"encrypt\" (default) or \"authenticate\"");
        if (!(KeyRotationSeconds >= 1) || KeyRotationSeconds > 86400)
            errors.Add($"KeyRotationSeconds: {KeyRotationSeconds} must be 1-86400 (default 120)");
        ConfigRules.LogLevel(errors, LogLevel);
        ValidateMetrics(errors);
    }

    void ValidateBounds(List<string> errors, double mostLease)
    {
        if (Lanes is < 0 or > 64)
            errors.Add($"Lanes: {Lanes} must be between 1 and 64, or 0 for one per core (the default)");
        if (MaxTcpFlows is < 16 or > 16_777_216)
            errors.Add($"MaxTcpFlows: {MaxTcpFlows} must be between 16 and 16777216 (default 65536)");
        if (MaxHolds is < 1 or > 4096) errors.Add($"MaxHolds: {MaxHolds} must be between 1 and 4096 (default 32)");
        if (MaxImageBytes < 1L << 20)
            errors.Add($"MaxImageBytes: {MaxImageBytes} must be at least 1048576 (1 MiB; default 68719476736)");
        if (MaxHoldPackets is < 16 or > 1_048_576)
            errors.Add($"MaxHoldPackets: {MaxHoldPackets} must be between 16 and 1048576 (default 16384)");
        if (!(MaxHoldLeaseSeconds >= HoldLeaseSeconds) || MaxHoldLeaseSeconds > mostLease)
            errors.Add($"MaxHoldLeaseSeconds: {MaxHoldLeaseSeconds} must be at least HoldLeaseSeconds " +
                $"({HoldLeaseSeconds}) and at most {mostLease} (default 60)");
    }

    void ValidateMetrics(List<string> errors)
    {
        if (Metrics.Length == 0) return;
        try
        {
            var (_, port) = global::Capsule.Agent.Metrics.MetricsEndpoint.Parse(Metrics);
            if (Listen?.StartsWith("http", StringComparison.Ordinal) == true
                && Uri.TryCreate(Listen, UriKind.Absolute, out var api) && api.Port == port)
                errors.Add($"Metrics: port {port} is Listen's too; give the metrics a port of their own (e.g. 9464)");
        }
        catch (ArgumentException)
        {
            errors.Add($"Metrics: '{Metrics}' is not http://ADDRESS:PORT (e.g. http://10.0.0.5:9464)");
        }
    }

    /// <summary>The agent's run-time options from valid settings.</summary>
    public AgentOptions ToOptions() =>
        new(Host!, Locator.Parse(Underlay!), Port, UnderlayMtu, Directory!, Listen!, State, NetnsPrefix,
            Criu, Serves, IcmpFrom, Tun)
        {
            HoldLease = TimeSpan.FromSeconds(HoldLeaseSeconds),
            HoldSpool = HoldSpool,
            DataPlaneMode = DataPlane == "authenticate" ? Wire.Mode.AuthenticateOnly : Wire.Mode.Encrypted,
            Offloads = Offloads,
            Lanes = Lanes > 0 ? Lanes : Math.Clamp(Environment.ProcessorCount, 1, 64),
            KeyRotation = TimeSpan.FromSeconds(KeyRotationSeconds),
            MaxTcpFlows = MaxTcpFlows,
            MaxHolds = MaxHolds,
            MaxImageBytes = MaxImageBytes,
            MaxHoldPackets = MaxHoldPackets,
            MaxHoldLease = TimeSpan.FromSeconds(MaxHoldLeaseSeconds),
            Metrics = Metrics,
            ControlSocket = string.IsNullOrEmpty(ControlSocket) ? null : ControlSocket,
            Tls = Tls.IsEmpty ? null : Tls,
        };
}
