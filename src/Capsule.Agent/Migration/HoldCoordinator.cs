using System.Diagnostics;
using Capsule.Agent.DataPlane;
using Capsule.Agent.Faults;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.Migration;

/// <summary>The packets a move held, flushed and dropped, over every holder.</summary>
internal sealed class HoldTally
{
    public long Flushed { get; private set; }
    public long Dropped { get; private set; }
    public long Held => Flushed + Dropped;

    /// <summary>What each holder had of each flow when it was released (the per-connection report).</summary>
    public List<HolderReport> Holders { get; } = [];

    public void Add(long flushed, long dropped)
    {
        Flushed += flushed;
        Dropped += dropped;
    }
}

/// <summary>
/// Hold coordination for one move (seed Fig. 5B and 6): this host and every host that has sent
/// to the capsule hold its packets, the cut is agreed by counts, the holds are kept alive by
/// renewing their leases while the move lasts, and at the end every holder flushes, in order, to
/// wherever the capsule then runs. A holder whose lease runs out (this agent died) flushes to
/// where the directory says, by itself.
/// </summary>
internal sealed partial class HoldCoordinator(AgentOptions options, DataPlaneHost dataPlane, FaultInjector faults,
    ILogger<HoldCoordinator> log)
{
    /// <summary>
    /// The lease every hold of a move gets (this host's own too): the source renews it while the
    /// move lasts, so it only runs out when the source is gone.
    /// </summary>
    TimeSpan Lease => options.HoldLease;

    /// <summary>
    /// How long the source waits for packets sent before the cut; past it TCP retransmits what was lost.
    /// </summary>
    static readonly TimeSpan CutWait = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// The cut: holds here and at every peer that has sent to the capsule; each peer says how far its
    /// sequence towards this host stood when it began to hold (<see cref="HoldCut"/>), and we wait
    /// (bounded) to have received that far. Peers that hold are in the returned set as soon as they
    /// answer, so a failure part-way releases them.
    /// </summary>
    public async Task<HoldSet> BeginAsync(LocalCapsule c, DirectoryState state, int capacity, CancellationToken ct)
    {
        var loc = c.Locator;
        var self = state.Hosts[options.Host].Underlay;
        // Still local here until the dump is done, whatever the directory says meanwhile: the
        // capsule's own packets (its kernel keeps sending while it runs) go out as before.
        dataPlane.Pin(loc, self);
        var set = new HoldSet(this, c, self);
        if (faults.Fires(FaultPoints.NoHold, FaultAction.Skip)) return set;
        // Local peers reach the capsule through its veth; with that route gone they reach the TUN,
        // and our own hold. What the data plane delivers still reaches it (the delivery table).
        await CapsuleNetwork.DetachAsync(loc);
        await dataPlane.Engine.HoldAsync(loc, self, capacity, c.UdpDrop, false, Lease);
        var peers = dataPlane.Engine.SendersTo(loc).Where(h => h != self)
            .Select(a => state.Hosts.Values.FirstOrDefault(h => h.Underlay == a)).OfType<HostRecord>().ToList();
        var request = new HoldRequest
        {
            Locator = loc.ToString(), Via = self.ToString(), Capacity = capacity, UdpDrop = c.UdpDrop,
            LeaseMs = (int)Lease.TotalMilliseconds,
        };
        var cuts = await Task.WhenAll(peers.Select(async p =>
        {
            var agent = new HostAgent.HostAgentClient(Channels.For(p.AgentEndpoint));
            var cut = await agent.HoldAsync(request, deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: ct);
            set.Add(p.Underlay, agent);
            return (p.Underlay, Cut: new HoldCut(cut.KeyId, cut.Sent.ToArray()));
        }));
        var sw = Stopwatch.StartNew();
        long Missing() => cuts.Sum(x => (long)dataPlane.Engine.NotYetReceived(x.Underlay, x.Cut));
        while (Missing() > 0 && sw.Elapsed < CutWait) await Task.Delay(1, ct);
        set.Unaccounted = Missing();
        set.StartRenewing(request);
        return set;
    }

    /// <summary>
    /// Ends the holds of <paramref name="holders"/> (and this host's own) for a capsule, flushing
    /// to <paramref name="to"/>; a holder that cannot be reached flushes by itself when its lease
    /// runs out. Used by recovery, which knows the holders only from the journal.
    /// </summary>
    public async Task<HoldTally> ReleaseAsync(Locator loc, IEnumerable<Locator> holders, Locator to,
        DirectoryState state)
    {
        var agents = holders
            .Select(a => state.Hosts.Values.FirstOrDefault(h => h.Underlay == a)).OfType<HostRecord>()
            .Select(h => (h.Underlay, new HostAgent.HostAgentClient(Channels.For(h.AgentEndpoint))));
        return await ReleaseAllAsync(agents, loc, to);
    }

    /// <summary>
    /// The one way a move's holds end: every peer flushes to <paramref name="to"/> (none: drops),
    /// then this host routes the capsule there (pinned ahead of the directory, so nothing sent
    /// after its own flush goes the old way) and flushes its own hold.
    /// </summary>
    internal async Task<HoldTally> ReleaseAllAsync(IEnumerable<(Locator Addr, HostAgent.HostAgentClient Agent)> peers,
        Locator loc, Locator to)
    {
        var tally = new HoldTally();
        var holders = peers.ToList();
        if (to == dataPlane.Engine.Table.Self) await KeysFromAsync(holders.Select(p => p.Addr));
        await ReleasePeersAsync(holders, loc, to, tally);
        if (!to.IsNone) dataPlane.Pin(loc, to);
        var held = await dataPlane.Engine.HoldContentsAsync(loc);
        var own = await dataPlane.Engine.ReleaseAsync(loc, to);
        tally.Add(own.Flushed, own.Dropped);
        var self = dataPlane.Engine.Table.Self;
        tally.Holders.Add(new HolderReport(self, FlowReports.Reply(own.Flushed, own.Dropped, held), !to.IsNone));
        return tally;
    }

    /// <summary>
    /// Before holders flush to this host: it must open what they send. An agent that restarted has none of their
    /// keys until each has pushed a fresh one (KeyExchange; its own push tells them they are needed), and a flush
    /// sealed with a key no longer known here is lost, the held TCP data with it, which was acknowledged in the
    /// capsule's name and is never sent again. Bounded: past it the holders flush anyway.
    /// </summary>
    async Task KeysFromAsync(IEnumerable<Locator> holders)
    {
        var sw = Stopwatch.StartNew();
        var keys = dataPlane.Keys;
        while (holders.Any(h => !keys.HasReceiveKey(h)) && sw.Elapsed < KeyWait) await Task.Delay(10);
    }

    static readonly TimeSpan KeyWait = TimeSpan.FromSeconds(5);

    async Task ReleasePeersAsync(IEnumerable<(Locator Addr, HostAgent.HostAgentClient Agent)> peers,
        Locator loc, Locator to, HoldTally tally)
    {
        var request = new ReleaseRequest { Locator = loc.ToString(), ToUnderlay = to.IsNone ? "" : to.ToString() };
        var replies = await Task.WhenAll(peers.Select(async p =>
        {
            var reply = await ReleaseOneAsync(p, request, loc);
            lock (tally.Holders) tally.Holders.Add(new HolderReport(p.Addr, reply, !to.IsNone));
            return reply;
        }));
        foreach (var r in replies) tally.Add(r.Flushed, r.Dropped);
    }

    async Task<ReleaseReply> ReleaseOneAsync((Locator Addr, HostAgent.HostAgentClient Agent) p, ReleaseRequest request,
        Locator loc)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await p.Agent.ReleaseAsync(request, deadline: DateTime.UtcNow.AddSeconds(5));
            }
            catch (RpcException e) when (attempt < 3
                && e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded)
            {
                // A lost Release is retried; if it never arrives, the holder's lease ends the hold.
                await Task.Delay(200 * attempt);
            }
            catch (RpcException e)
            {
                LogReleaseFailed(log, p.Addr, loc, e.Status.Detail);
                return new ReleaseReply();
            }
        }
    }

    internal DataPlaneHost DataPlane => dataPlane;
    internal ILogger Log => log;

    [LoggerMessage(EventId = 300, Level = LogLevel.Warning,
        Message = "holder {Holder} did not take the release of {Locator} ({Error}); its lease will end the hold")]
    static partial void LogReleaseFailed(ILogger logger, Locator holder, Locator locator, string error);
}
