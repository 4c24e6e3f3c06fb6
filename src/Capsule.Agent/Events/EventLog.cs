using System.Runtime.CompilerServices;
using Capsule.Agent.DataPlane;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Microsoft.Extensions.Hosting;

namespace Capsule.Agent.Events;

/// <summary>
/// What this agent saw happen, for `capsule events`: the migrations it ran as their source, the
/// holds it kept, and the directory changes it is the one to report (<see cref="DirectoryDiff"/>),
/// so that asking every agent shows each change once. In memory and bounded: the newest
/// <see cref="Capacity"/> events of this agent's run; a restarted agent begins a new ring.
/// </summary>
internal sealed class EventLog(AgentOptions options, IHostApplicationLifetime lifetime)
{
    /// <summary>A few hundred migrations' worth (each: start, end, a hold taken and ended per holder).</summary>
    public const int Capacity = 4096;

    readonly EventRing<AgentEvent> _ring = new(Capacity);

    /// <summary>The directory as last seen: what changes are measured against, and how names are found.</summary>
    DirectoryState? _seen;

    /// <summary>Stamps the event with its number, time and this host, in ring order.</summary>
    void Add(AgentEvent e) => _ring.Add(seq =>
    {
        e.Seq = seq;
        e.TimeUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        e.Host = options.Host;
        return e;
    });

    public void AgentStarted() => Add(new AgentEvent { Kind = EventKind.AgentStarted });

    /// <summary>Each directory state the agent's watch delivers, in order (one caller at a time).</summary>
    public void DirectoryChanged(DirectoryUpdate update)
    {
        var before = Volatile.Read(ref _seen);
        Volatile.Write(ref _seen, update.State);
        // The first state after the agent starts is where it begins, not a change.
        if (before is null) return;
        var events = update.Full ? DirectoryDiff.ReportedBy(options.Host, before, update.State)
            : DirectoryDiff.ReportedBy(options.Host, before, update.State, update.Changes);
        foreach (var d in events)
            Add(d.Kind switch
            {
                MembershipChange.HostJoined => new AgentEvent { Kind = EventKind.HostJoined, Peer = d.Name },
                MembershipChange.HostLeft => new AgentEvent { Kind = EventKind.HostLeft, Peer = d.Name },
                MembershipChange.CapsuleCreated => CapsuleEvent(EventKind.CapsuleCreated, d),
                _ => CapsuleEvent(EventKind.CapsuleRemoved, d),
            });
    }

    static AgentEvent CapsuleEvent(EventKind kind, DirectoryEvent d) =>
        new() { Kind = kind, Capsule = d.Name, Locator = d.Locator.ToString(), Peer = d.Host };

    /// <summary>
    /// The engine's listener (<see cref="Engine.OnHoldChange"/>): called on the egress thread, so the
    /// event is made on the thread pool, where looking names up in the directory state costs nothing.
    /// </summary>
    public void HoldChanged(HoldChange change) =>
        ThreadPool.UnsafeQueueUserWorkItem(static x => x.Log.RecordHold(x.Change), (Log: this, Change: change),
            preferLocal: false);

    void RecordHold(HoldChange c)
    {
        var state = Volatile.Read(ref _seen);
        var e = new AgentEvent
        {
            Kind = c.Kind switch
            {
                HoldChangeKind.Released => EventKind.HoldReleased,
                HoldChangeKind.Expired => EventKind.HoldExpired,
                _ => EventKind.HoldTaken,
            },
            Capsule = state?.Capsules.Values.FirstOrDefault(x => x.Locator == c.Locator)?.Name ?? "",
            Locator = c.Locator.ToString(),
            Peer = c.Host.IsNone ? "" : state?.Hosts.Values.FirstOrDefault(h => h.Underlay == c.Host)?.Name ?? "",
            Packets = c.Packets,
            Dropped = c.Dropped,
        };
        if (c.Kind is HoldChangeKind.Released or HoldChangeKind.Expired)
            e.DurationMs = (long)c.Lasted.TotalMilliseconds;
        Add(e);
    }

    public void MigrationStarted(string capsule, string target) =>
        Add(new AgentEvent { Kind = EventKind.MigrationStarted, Capsule = capsule, Peer = target });

    public void MigrationEnded(string capsule, string target, MigrateResult r) => Add(new AgentEvent
    {
        Kind = EventKind.MigrationEnded, Capsule = capsule, Peer = target, Outcome = Outcome(r), Error = r.Error,
        DurationMs = r.Times?.TotalMs ?? 0, Packets = r.Flushed, Dropped = r.Dropped, Flows = { r.Flows },
    });

    /// <summary>
    /// A migration that ended with an error rather than a result: refused before anything changed
    /// (no such host, already moving, target unreachable), or failed past its start.
    /// </summary>
    public void MigrationThrew(string capsule, string target, MigrationOutcome outcome, string error) =>
        Add(new AgentEvent
        {
            Kind = EventKind.MigrationEnded, Capsule = capsule, Peer = target, Outcome = outcome, Error = error,
        });

    public void DrainStarted(int capsules) =>
        Add(new AgentEvent { Kind = EventKind.DrainStarted, Drain = new DrainEvent { Capsules = capsules } });

    public void DrainEnded(DrainReport r) => Add(new AgentEvent
    {
        Kind = EventKind.DrainEnded, DurationMs = r.ElapsedMs,
        Drain = new DrainEvent
        {
            Capsules = r.Items.Count, State = r.State, Moved = r.Moved, NotMoved = r.Items.Count - r.Moved,
        },
    });

    /// <summary>
    /// What the ring holds, oldest first, then (with <paramref name="follow"/>) each new event as it
    /// comes, until the caller goes away or the agent stops (a follower must not hold up its shutdown).
    /// </summary>
    public async IAsyncEnumerable<AgentEvent> ReadAsync(bool follow, [EnumeratorCancellation] CancellationToken ct)
    {
        using var both = CancellationTokenSource.CreateLinkedTokenSource(ct, lifetime.ApplicationStopping);
        var last = 0L;
        while (true)
        {
            // Whatever was overwritten while a follower was slow is gone; it gets what is left.
            foreach (var entry in _ring.Read(last).Entries)
            {
                last = entry.Seq;
                yield return entry.Item;
            }
            if (!follow) yield break;
            try
            {
                await _ring.WhenAddedAfter(last, both.Token);
            }
            catch (OperationCanceledException)
            {
                yield break;
            }
        }
    }

    public static MigrationOutcome Outcome(MigrateResult r) =>
        r.Ok ? MigrationOutcome.Ok : r.ResumedOnSource ? MigrationOutcome.ResumedOnSource : MigrationOutcome.Failed;
}
