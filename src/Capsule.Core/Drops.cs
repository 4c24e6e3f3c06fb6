namespace Capsule.Core;

/// <summary>Why the data plane refused a packet. Every drop is counted under exactly one reason.</summary>
public enum DropReason
{
    None = 0,
    /// <summary>Datagram too short, wrong magic, unknown kind or flags.</summary>
    Malformed,
    /// <summary>A header version this agent does not speak.</summary>
    BadVersion,
    /// <summary>Datagram from an address that is not a registered host.</summary>
    UnknownHost,
    /// <summary>Wrapped or captured packet is not a well-formed IPv4 packet.</summary>
    BadInnerPacket,
    /// <summary>Inbound packet for a locator this host does not hold.</summary>
    NotLocalCapsule,
    /// <summary>Inbound packet whose source locator is not on the host that sent it.</summary>
    SourceHostMismatch,
    /// <summary>Outbound packet whose source is not a capsule on this host (forged or stray).</summary>
    SpoofedSource,
    /// <summary>Outbound packet for a locator the directory does not know.</summary>
    NoRoute,
    /// <summary>Wrapped packet would exceed the underlay MTU.</summary>
    TooBig,
    /// <summary>The kernel refused the send or the TUN write.</summary>
    IoError,
    /// <summary>Datagram whose AEAD tag does not verify under its sender's key (forged or corrupted).</summary>
    BadTag,
    /// <summary>Authentic datagram whose counter was seen already or is below the replay window.</summary>
    Replay,
    /// <summary>Datagram from a known host under a key id this host does not have (or no longer has).</summary>
    UnknownKey,
    /// <summary>Outbound packet for a host this agent has no send key for yet (the exchange is started).</summary>
    NoSendKey,
}

/// <summary>
/// Drop counts by reason. Each data-plane thread owns one instance and is its only writer, so
/// increments are plain adds; readers may see a slightly stale value, never a torn one (64-bit).
/// </summary>
public sealed class DropCounters
{
    public static readonly DropReason[] Reasons = Enum.GetValues<DropReason>()[1..];
    readonly long[] _counts = new long[Reasons.Length + 1];

    public void Add(DropReason r) => _counts[(int)r]++;

    /// <summary>Adds another thread's counts to these (a sum for the readers, never a thread's own).</summary>
    public void Add(DropCounters other)
    {
        for (var i = 0; i < _counts.Length; i++) _counts[i] += Volatile.Read(ref other._counts[i]);
    }
    public long this[DropReason r] => Volatile.Read(ref _counts[(int)r]);

    public static string Key(DropReason r) => r switch
    {
        DropReason.Malformed => "malformed",
        DropReason.BadVersion => "bad_version",
        DropReason.UnknownHost => "unknown_host",
        DropReason.BadInnerPacket => "bad_inner_packet",
        DropReason.NotLocalCapsule => "not_local_capsule",
        DropReason.SourceHostMismatch => "source_host_mismatch",
        DropReason.SpoofedSource => "spoofed_source",
        DropReason.NoRoute => "no_route",
        DropReason.TooBig => "too_big",
        DropReason.IoError => "io_error",
        DropReason.BadTag => "bad_tag",
        DropReason.Replay => "replay",
        DropReason.UnknownKey => "unknown_key",
        DropReason.NoSendKey => "no_send_key",
        _ => "none",
    };
}
