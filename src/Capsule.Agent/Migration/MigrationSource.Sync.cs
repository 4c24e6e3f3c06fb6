using Capsule.Agent.Faults;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

internal sealed partial class MigrationSource
{
    /// <summary>How many times a sync may begin, when connections keep closing during it.</summary>
    const int SyncAttempts = 3;

    /// <summary>
    /// The sync (seed Fig. 5A): peers hold the capsule's packets, the directory says it moves, and
    /// it is sealed (nothing reaches it any more, not even from this host). Returns its record as
    /// the directory then has it: the switch is conditional on that revision.
    ///
    /// A connection the capsule closes during the sync with data still in flight is lost with the
    /// freeze (CRIU cannot take a socket no process holds) and cannot finish meanwhile: its peer's
    /// acknowledgements are held. So the sync is undone (routes back, directory back, holds flushed
    /// here), the connection given time to finish, and the sync begun again; after
    /// <see cref="SyncAttempts"/> what is left is counted in the result (closing_connections_lost).
    /// </summary>
    async Task<CapsuleRecord> SyncAsync(Move m, DirectoryState state, CapsuleRecord rec,
        Func<string, string, Task> progress, CancellationToken ct)
    {
        var r = m.Result;
        var c = m.Capsule;
        var capacity = m.Request.HoldPackets > 0 ? m.Request.HoldPackets : DefaultHoldPackets;
        await progress("sync", "peers hold the capsule's packets; agreeing on the cut");
        for (var attempt = 1; ; attempt++)
        {
            await Quiesce.ClosingConnectionsAsync(c.Pid, ct);
            m.Holds = await holds.BeginAsync(c, state, capacity, ct);
            r.Unaccounted = m.Holds.Unaccounted;
            r.Peers = m.Holds.Count;
            journal.Write(m.Record(MoveStep.Syncing, m.Holds.Holders));
            // From here no host routes to the capsule (holds aside).
            rec = await directory.UpdateAsync(c.Name, O.Host, CapsuleState.Migrating, rec.Revision,
                $"to {m.Target.Name}", ct);
            await faults.HitAsync(FaultPoints.SourceAfterSync);
            // Sealed before the UDP wait: a capsule of this host sends to it directly, not through a
            // hold, so until the seal its datagrams could join the queue after the wait found it
            // empty (seen: one datagram lost uncounted per move away from the sender's host).
            await CapsuleNetwork.SealAsync(c.Locator);
            r.UdpBytesLostAtFreeze = await Quiesce.UdpQueuesAsync(c.Pid, ct);
            var closing = Quiesce.ClosingWithDataInFlight(c.Pid);
            if (closing == 0 || attempt == SyncAttempts)
            {
                r.ClosingConnectionsLost = closing;
                r.Times.SyncMs = m.Clock.Lap();
                return rec;
            }
            LogResync(log, c.Name, closing, attempt);
            await progress("sync", $"{closing} connection(s) closed during the sync with data in flight; " +
                "letting them finish, then syncing again");
            await rollback.RunAsync(c, null, m.Images, m.Holds, [], null);
            await m.Holds.DisposeAsync();
            m.Holds = null;
            state = await directory.SnapshotAsync(ct);
            rec = state.Capsules.GetValueOrDefault(c.Name)
                ?? throw new InvalidOperationException($"capsule '{c.Name}' left the directory during its sync");
        }
    }

    [LoggerMessage(EventId = 314, Level = LogLevel.Information,
        Message =
            "{Name}: {Closing} connection(s) closed during sync attempt {Attempt} with data in flight; syncing again")]
    static partial void LogResync(ILogger logger, string name, int closing, int attempt);
}
