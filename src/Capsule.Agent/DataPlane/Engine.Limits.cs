namespace Capsule.Agent.DataPlane;

/// <summary>A hold asked for with more than this host allows; the Hold RPC answers it with ResourceExhausted.</summary>
internal sealed class HoldRefusedException(string message) : Exception(message);

/// <summary>
/// The agent's own bounds on holds. A Hold request comes from another host (or anyone who reaches
/// the agent's port while control calls are not authenticated): its capacity and lease are what
/// the caller wishes, not what this host gives. Each is clamped to this host's maximum, and the
/// number of holds at once is bounded, so callers cannot together make the agent take more than
/// MaxHolds × MaxHoldPackets slots (2 KB each, pages touched only by packets held).
/// </summary>
internal sealed unsafe partial class Engine
{
    public const int DefaultMaxHolds = 32;
    public const int DefaultMaxHoldPackets = 16384;
    public static readonly TimeSpan DefaultMaxHoldLease = TimeSpan.FromSeconds(60);

    /// <summary>Holds (taken, draining or taken back) this host keeps at once; one more is refused.</summary>
    public int MaxHolds { get; init; } = DefaultMaxHolds;

    /// <summary>The largest hold buffer given, in packets; a request for more gets this many.</summary>
    public int MaxHoldPackets { get; init; } = DefaultMaxHoldPackets;

    /// <summary>The longest lease given; a request for more gets this (its source renews well within it).</summary>
    public TimeSpan MaxHoldLease { get; init; } = DefaultMaxHoldLease;

    /// <summary>New holds refused (MaxHolds reached); requests whose capacity or lease was cut down.</summary>
    public long HoldsRefused, HoldsClamped;

    /// <summary>What a request gets: capacity and lease cut to this host's maxima (and counted when cut).</summary>
    (int Capacity, TimeSpan Lease) Clamp(int capacity, TimeSpan lease)
    {
        if (capacity <= MaxHoldPackets && lease <= MaxHoldLease) return (capacity, lease);
        Interlocked.Increment(ref HoldsClamped);
        return (Math.Min(capacity, MaxHoldPackets), lease < MaxHoldLease ? lease : MaxHoldLease);
    }

    /// <summary>Null when one more hold fits; otherwise why not, for the person who reads the error.</summary>
    string? NoRoomForHold() => _holds.Count < MaxHolds
        ? null
        : $"this host holds {_holds.Count} capsules' packets already, its most (MaxHolds {MaxHolds}); " +
          "try again once a migration has ended";
}
