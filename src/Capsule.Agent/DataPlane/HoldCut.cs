namespace Capsule.Agent.DataPlane;

/// <summary>
/// Where a holder's sequence towards the capsule's host stood when its hold began (seed Fig. 5B): the datagrams
/// each of its lanes had sealed under key <see cref="KeyId"/>, lane i counters 0 to <see cref="Sent"/>[i] - 1. The
/// capsule's host waits until it has received that far before it seals the capsule, so nothing sent before the
/// cut comes after it.
///
/// Counted per key rather than per flow: a key is made for one pair of running agents, so both ends count from
/// the same start. Per-flow counts outlived an agent's restart on one side and a locator's reuse by a new
/// capsule, and the wait then ran to its bound on every later move (seen: 1465 packets "missing" for ever
/// after one restart of the capsule's host). Counted per lane, since the lanes seal at once and their datagrams
/// interleave, while one lane's arrive in order (<see cref="PeerKeys.NotYetOpened"/>). A key rotation at the very
/// moment of the hold leaves the old key's last datagrams unwaited for: late, they still reach the capsule,
/// through the source's own hold.
/// </summary>
internal readonly record struct HoldCut(uint KeyId, IReadOnlyList<ulong> Sent)
{
    /// <summary>Lanes the holder counted (none: it had no key towards the capsule's host).</summary>
    public int Lanes => Sent?.Count ?? 0;

    /// <summary>What lane <paramref name="lane"/> had sealed; 0 past the lanes counted.</summary>
    public ulong SentBy(int lane) => lane < Lanes ? Sent![lane] : 0;
}
