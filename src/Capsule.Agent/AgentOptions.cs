using Capsule.Core;

namespace Capsule.Agent;

/// <summary>How one host agent (capsuled) is set up, from its checked settings (<see cref="AgentConfig"/>).</summary>
public sealed record AgentOptions(
    string Host,
    Locator Underlay,
    int Port,
    int UnderlayMtu,
    string Directory,
    string Listen,
    string StateDir,
    string NetnsPrefix,
    string Criu = Checkpoint.Criu.DefaultBinary,
    string Serves = "",
    string IcmpFrom = "",
    string Tun = "cap0")
{
    /// <summary>
    /// How long a hold lasts when its Hold RPC names no lease: the longest a migration's source may
    /// stay silent before this host ends the hold by itself (so a dead source cannot hold forever).
    /// </summary>
    public TimeSpan HoldLease { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>
    /// Folder for the holds' spool files: what a hold acknowledged outlives the agent. In memory
    /// (tmpfs): a disk's block allocation and writeback stalled the egress thread (seen: a UDP
    /// receiver overrun after a flush); a host that reboots loses its capsules' peers anyway.
    /// </summary>
    public string HoldSpool { get; init; } = DefaultHoldSpool;

    public const string DefaultHoldSpool = "/dev/shm/capsule-holds";

    // Bounds on what other hosts (or anyone reaching the agent) make this one keep: see Engine.Limits.cs.
    /// <summary>Most TCP flows a gateway tracks to pause them; the idlest are evicted when full.</summary>
    public int MaxTcpFlows { get; init; } = DataPlane.Engine.DefaultMaxFlows;
    /// <summary>Most holds at once; one more is refused.</summary>
    public int MaxHolds { get; init; } = DataPlane.Engine.DefaultMaxHolds;

    /// <summary>Most bytes one incoming image (a migration's, a resumed file's) may unpack (ImageBudget).</summary>
    public long MaxImageBytes { get; init; } = DefaultMaxImageBytes;

    public const long DefaultMaxImageBytes = 64L << 30;

    /// <summary>Largest hold buffer, in packets, whatever a Hold request asks.</summary>
    public int MaxHoldPackets { get; init; } = DataPlane.Engine.DefaultMaxHoldPackets;
    /// <summary>Longest hold lease, whatever a Hold request asks.</summary>
    public TimeSpan MaxHoldLease { get; init; } = DataPlane.Engine.DefaultMaxHoldLease;

    /// <summary>Where to serve Prometheus metrics (http://addr:port, path /metrics); empty: not served.</summary>
    public string Metrics { get; init; } = "";
    /// <summary>
    /// A unix socket (unix:/path) the API is also served on, for this machine's tools; told to no one.
    /// </summary>
    public string? ControlSocket { get; init; }

    /// <summary>How this host seals what it sends (receivers open either mode: the tag covers it).</summary>
    public Wire.Mode DataPlaneMode { get; init; } = Wire.Mode.Encrypted;
    /// <summary>TUN offloads, UDP GSO and GRO on the data plane (see <see cref="AgentConfig.Offloads"/>).</summary>
    public bool Offloads { get; init; } = true;
    /// <summary>
    /// Lanes of the data plane, each a TUN queue and a socket with two threads (<see cref="AgentConfig.Lanes"/>).
    /// </summary>
    public int Lanes { get; init; } = 1;
    /// <summary>How often each send key is replaced by a fresh one (see DataPlane/KeyExchange.cs).</summary>
    public TimeSpan KeyRotation { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>This host's certificates (the config's Tls section), or null: no TLS, with a warning.</summary>
    public Hosting.TlsConfig? Tls { get; init; }

    public int InnerMtu => UnderlayMtu - Wire.Overhead;
    /// <summary>A gateway's address for the ICMP answers it gives as a router (its ordinary-side address).</summary>
    public Locator IcmpSource => IcmpFrom.Length > 0 ? Locator.Parse(IcmpFrom) : Underlay;
    // Network namespace names are machine-wide; the host is in it so that, in a lab, source and
    // target of a migration each hold their own namespace for the capsule while it moves.
    public string CapsuleNetns(string capsule) => $"{NetnsPrefix}-{Host}-c-{capsule}";
    public string CapsuleDir(string capsule) => Path.Combine(StateDir, "capsules", capsule);
}
