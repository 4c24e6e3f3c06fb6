using System.Diagnostics;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

internal enum HoldChangeKind
{
    Taken,
    /// <summary>Taken back from the spool a previous agent on this host left.</summary>
    TakenBack,
    Released,
    /// <summary>Its lease ran out with no release.</summary>
    Expired,
}

/// <summary>
/// A hold began or ended. <see cref="Host"/>: when taken, the capsule's host; when ended, where the
/// hold flushed (none: nowhere, its packets dropped). Packets: flushed (ended) or found (taken back).
/// </summary>
internal readonly record struct HoldChange(HoldChangeKind Kind, Locator Locator, Locator Host, long Packets,
    long Dropped, TimeSpan Lasted);

/// <summary>
/// What the engine tells the agent about its holds (for `capsule events`). Only when a hold begins
/// or ends, never per packet, and the listener hands the work to another thread.
/// </summary>
internal sealed partial class Engine
{
    /// <summary>Called on the owner's egress thread: it must return at once. Set before <see cref="Start"/>.</summary>
    public Action<HoldChange>? OnHoldChange { get; set; }

    void Tell(HoldChangeKind kind, Hold hold, Locator host, long packets, long dropped) =>
        OnHoldChange?.Invoke(new HoldChange(kind, hold.Locator, host, packets, dropped,
            Stopwatch.GetElapsedTime(hold.Started)));

    /// <summary>
    /// Holds now and the packets they keep, for the metrics: counted on the owner's egress thread, which owns
    /// the holds (their buffers may be unmapped under any other reader), as a command between batches.
    /// </summary>
    public Task<(int Holds, long Packets)> HoldsNowAsync() =>
        OnEgress<(int, long)>(done =>
        {
            var packets = 0L;
            foreach (var hold in _holds.Values) packets += hold.Buffer.Count;
            done.SetResult((_holds.Count, packets));
        });
}
