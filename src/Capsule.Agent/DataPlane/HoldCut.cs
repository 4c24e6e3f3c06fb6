namespace Capsule.Agent.DataPlane;

/// <summary>
/// Where a holder's sequence towards the capsule's host stood when its hold began (seed Fig. 5B): the datagrams
/// it had sealed under key <see cref="KeyId"/>, counters 0 to <see cref="Sent"/> - 1. The capsule's host waits
/// until it has received that far before it seals the capsule, so nothing sent before the cut comes after it.
///
/// Counted per key rather than per flow: a key is made for one pair of running agents, so both ends count from
/// the same start. Per-flow counts outlived an agent's restart on one side and a locator's reuse by a new
/// capsule, and the wait then ran to its bound on every later move (seen: 1465 packets "missing" for ever
/// after one restart of the capsule's host). A key rotation at the very moment of the hold leaves the old key's
/// last datagrams unwaited for: late, they still reach the capsule, through the source's own hold.
/// </summary>
internal readonly record struct HoldCut(uint KeyId, ulong Sent)
{
    /// <summary>How many of the datagrams before the cut have not arrived, given how far the key's have.</summary>
    /// <param name="reached">What <see cref="PeerKeys.OpenedFrom"/> says; null (the key is not opened here:
    /// nothing sealed under it can arrive) counts as nothing missing.</param>
    public ulong Missing(ulong? reached) => reached is { } r && r < Sent ? Sent - r : 0;
}
