using System.Diagnostics;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// The holds' spool files (see <see cref="HoldBuffer"/>): a hold's buffer lives in a file of the
/// spool folder, so what a holder acknowledged in a capsule's name outlives the agent; the next
/// agent on the host takes those holds back. The owner's egress thread, like every hold.
/// </summary>
internal sealed unsafe partial class Engine
{
    /// <summary>
    /// A buffer in the spool folder, so what it holds outlives this agent; in memory alone (and
    /// counted) when the folder cannot take it, since holding beats refusing the hold.
    /// </summary>
    HoldBuffer NewBuffer(Locator locator, int capacity, bool dropUdp)
    {
        if (_holdSpool is null) return new HoldBuffer(capacity, dropUdp, locator);
        try
        {
            // A name of its own: the spool of a hold that just ended may still be on its way out.
            var file = Path.Combine(_holdSpool, $"{locator}.{Stopwatch.GetTimestamp()}.hold");
            return HoldBuffer.Create(file, locator, capacity, dropUdp);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Owner.Egress.HoldSpoolFailures++;
            return new HoldBuffer(capacity, dropUdp, locator);
        }
    }

    /// <summary>
    /// Takes back the holds an earlier agent on this host left in the spool folder (it died, or
    /// stopped, while it held). Each holds again with a fresh <paramref name="lease"/>: its source's
    /// renewals and release find it as if nothing had happened, and if none come, the lease ends it
    /// towards wherever the table then routes the capsule. Returns the holds and packets taken back,
    /// and the spool files that were of no use (deleted).
    /// </summary>
    public Task<(int Holds, long Packets, IReadOnlyList<string> Unusable)> RecoverHoldsAsync(TimeSpan lease) =>
        OnEgress<(int, long, IReadOnlyList<string>)>(done =>
        {
            var (holds, packets, unusable) = (0, 0L, new List<string>());
            if (_holdSpool is not null)
                foreach (var path in Directory.EnumerateFiles(_holdSpool, "*.hold"))
                {
                    HoldBuffer? buffer;
                    string? problem;
                    try
                    {
                        buffer = HoldBuffer.Open(path, out problem);
                    }
                    catch (IOException e)
                    {
                        (buffer, problem) = (null, e.Message);
                    }
                    if (buffer is { Count: 0 })
                    {
                        buffer.Dispose(); // a hold that had ended, its file not yet deleted
                        continue;
                    }
                    if (buffer is null || _holds.ContainsKey(buffer.Locator.Value))
                    {
                        buffer?.Detach();
                        unusable.Add($"{Path.GetFileName(path)}: {problem ?? "a hold for it runs already"}");
                        File.Delete(path);
                        continue;
                    }
                    var hold = new Hold(buffer.Locator, buffer, After(lease), pauses: false);
                    _holds[buffer.Locator.Value] = hold;
                    Tell(HoldChangeKind.TakenBack, hold, Locator.None, buffer.Count, 0);
                    holds++;
                    packets += buffer.Count;
                }
            if (holds > 0) PublishHolds();
            done.SetResult((holds, packets, unusable));
        });
}
