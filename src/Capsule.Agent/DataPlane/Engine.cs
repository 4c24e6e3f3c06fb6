using System.Buffers.Binary;
using System.Collections.Concurrent;
using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>Packet and byte counts for one direction; written by one thread only.</summary>
internal sealed class FlowCounters
{
    public long Packets, Bytes, Batches, Held, Flushed, HoldDropped, Unreachables;

    /// <summary>
    /// Offloads at work: super-packets (egress: TUN reads cut into several segments; ingress: TUN writes of
    /// several coalesced segments) and UDP messages of several datagrams (egress: GSO sends; ingress: GRO).
    /// </summary>
    public long SuperPackets, GsoMessages;

    /// <summary>
    /// Bytes the direction's thread has allocated since it started, as of its last batch: the hot path is meant
    /// to allocate nothing per packet, and this shows whether it does.
    /// </summary>
    public long Allocated;

    /// <summary>
    /// Of <see cref="HoldDropped"/> at a full buffer or by policy, the UDP datagrams (what a UDP receiver misses).
    /// </summary>
    public long HoldDroppedUdp;
    /// <summary>Holds whose lease ran out with no release, and what such holds dropped (routed nowhere).</summary>
    public long HoldsExpired, HoldExpiredDropped;
    /// <summary>
    /// Packets for a local capsule read from the TUN and written back for delivery (its local route not yet there).
    /// </summary>
    public long DeliveredLocal;
    /// <summary>Holds kept in memory alone because their spool file could not be made.</summary>
    public long HoldSpoolFailures;
    public readonly DropCounters Drops = new();

    /// <summary>The lanes' counts added up, for the stats and metrics (a snapshot; the lanes go on counting).</summary>
    public static FlowCounters Sum(IEnumerable<FlowCounters> lanes)
    {
        var s = new FlowCounters();
        foreach (var c in lanes)
        {
            s.Packets += Volatile.Read(ref c.Packets);
            s.Bytes += Volatile.Read(ref c.Bytes);
            s.Batches += Volatile.Read(ref c.Batches);
            s.Held += Volatile.Read(ref c.Held);
            s.Flushed += Volatile.Read(ref c.Flushed);
            s.HoldDropped += Volatile.Read(ref c.HoldDropped);
            s.Unreachables += Volatile.Read(ref c.Unreachables);
            s.SuperPackets += Volatile.Read(ref c.SuperPackets);
            s.GsoMessages += Volatile.Read(ref c.GsoMessages);
            s.Allocated += Volatile.Read(ref c.Allocated);
            s.HoldDroppedUdp += Volatile.Read(ref c.HoldDroppedUdp);
            s.HoldsExpired += Volatile.Read(ref c.HoldsExpired);
            s.HoldExpiredDropped += Volatile.Read(ref c.HoldExpiredDropped);
            s.DeliveredLocal += Volatile.Read(ref c.DeliveredLocal);
            s.HoldSpoolFailures += Volatile.Read(ref c.HoldSpoolFailures);
            s.Drops.Add(c.Drops);
        }
        return s;
    }
}

/// <summary>
/// The hot path of a host agent (seed Fig. 8), on <see cref="Lane"/>s: each lane is a TUN queue and a UDP socket
/// with two threads, one per direction: egress (Engine.Egress.cs) reads packets the kernel routed to its TUN queue,
/// cuts super-packets into segments, wraps each for the host that holds its destination and sends the batch with
/// one sendmmsg, runs for one host as UDP GSO messages; ingress (Engine.Ingress.cs) takes a batch with one
/// recvmmsg, checks each datagram, coalesces a flow's TCP segments and writes the inner packets to its TUN queue,
/// whence the kernel delivers them to the capsule's veth. The translation table is read once per batch; nothing
/// allocates per packet (a sender's entry in <see cref="ReceivedFrom"/> is made once, when it first sends to a
/// capsule).
///
/// Hold and flush (seed Fig. 5B/6) run on lane 0's egress thread, the owner, as commands between batches and as
/// timed work between them (leases, paced drains; see Engine.Holds.cs). The other lanes' egress threads see the
/// holds as a copy the owner publishes, and put a held capsule's packets into its buffer under the hold's lock. A
/// hold's cut waits until every lane has taken the copy that has it, between two batches: then each lane's counter
/// says exactly what it sent before the cut, and a drain sends every held packet before any packet read after the
/// release, so order is kept as it leaves (at the new host, the drain's last packets and another lane's first
/// after it may come in on two lanes and swap: docs/dataplane.md).
/// </summary>
internal sealed unsafe partial class Engine : IDisposable
{
    public const int BatchSize = 64;

    readonly Lane[] _lanes;
    readonly int _port;
    readonly int _stopFd;
    readonly int _maxInner;
    readonly string? _holdSpool;
    readonly PeerKeys _keys;
    readonly List<Thread> _threads = [];
    readonly ConcurrentQueue<Action> _commands = new();
    TranslationTable _table = TranslationTable.Empty;
    int _disposed;

    /// <summary>Lane 0: its egress thread runs the commands and owns the holds.</summary>
    Lane Owner => _lanes[0];

    /// <summary>What the lanes sent, added up (a snapshot).</summary>
    public FlowCounters Egress => FlowCounters.Sum(_lanes.Select(l => l.Egress));
    /// <summary>What the lanes received, added up (a snapshot).</summary>
    public FlowCounters Ingress => FlowCounters.Sum(_lanes.Select(l => l.Ingress));
    public int Lanes => _lanes.Length;

    /// <summary>Packets each lane sent and delivered: how the kernel spread the flows over the lanes.</summary>
    public IEnumerable<(int Lane, long Egress, long Ingress)> ByLane() =>
        _lanes.Select(l => (l.Index, Volatile.Read(ref l.Egress.Packets), Volatile.Read(ref l.Ingress.Packets)));
    /// <summary>
    /// Which hosts have sent to which capsules: a set of keys host &lt;&lt; 32 | locator (ingress threads add).
    /// </summary>
    public ConcurrentDictionary<ulong, byte> ReceivedFrom { get; } = new();
    public TranslationTable Table => Volatile.Read(ref _table);
    /// <summary>Source of the ICMP unreachable answers a gateway gives.</summary>
    public Locator IcmpSource { get; set; }

    /// <param name="lanes">The lanes, lane 0 first; they stay the caller's to dispose, after this engine.</param>
    /// <param name="holdSpool">
    /// Folder for the holds' spool files (what a hold acknowledged outlives the agent); null keeps
    /// holds in memory alone.
    /// </param>
    public Engine(IReadOnlyList<Lane> lanes, int underlayMtu, PeerKeys keys, string? holdSpool = null)
    {
        if (lanes.Count == 0 || lanes.Count > keys.Lanes)
            throw new ArgumentException($"{lanes.Count} lanes, and keys for {keys.Lanes}", nameof(lanes));
        _lanes = [.. lanes];
        _port = lanes[0].Udp.Port;
        _holdSpool = holdSpool;
        _keys = keys;
        _maxInner = underlayMtu - Wire.Overhead;
        _stopFd = Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK);
        Native.ThrowIfFailed(_stopFd, "eventfd");
        foreach (var lane in _lanes)
        {
            lane.ToTun = (header, packet) => WriteCoalesced(lane, header, packet);
            _threads.Add(new Thread(() => EgressLoop(lane))
            {
                Name = $"capsule-egress-{lane.Index}",
                IsBackground = true,
            });
            _threads.Add(new Thread(() => IngressLoop(lane))
            {
                Name = $"capsule-ingress-{lane.Index}",
                IsBackground = true,
            });
        }
    }

    public void Start()
    {
        foreach (var t in _threads) t.Start();
    }

    /// <summary>Publishes a new table; the next batch in each direction uses it.</summary>
    public void Publish(TranslationTable table) => Volatile.Write(ref _table, table);

    // ---- control: hold and flush (Engine.Holds.cs), run on the owner's egress thread ----

    /// <summary>
    /// Runs <paramref name="start"/> on the owner's egress thread, between batches; it completes the task
    /// then or later (a release completes when its drain has ended).
    /// </summary>
    Task<T> OnEgress<T>(Action<TaskCompletionSource<T>> start)
    {
        var tcs = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _commands.Enqueue(() =>
        {
            try { start(tcs); }
            catch (Exception e) { tcs.TrySetException(e); }
        });
        Owner.Wake();
        return tcs.Task;
    }

    static ulong Key(Locator host, Locator locator) => ((ulong)host.Value << 32) | locator.Value;

    /// <summary>Hosts that have sent packets to <paramref name="locator"/>: the peers a migration must hold.</summary>
    public IEnumerable<Locator> SendersTo(Locator locator)
    {
        foreach (var key in ReceivedFrom.Keys)
            if ((uint)key == locator.Value) yield return new Locator((uint)(key >> 32));
    }

    /// <summary>How many datagrams <paramref name="host"/> sent here before its cut have not arrived yet.</summary>
    public ulong NotYetReceived(Locator host, HoldCut cut) => _keys.NotYetOpened(host, cut);

    void RunCommands()
    {
        while (_commands.TryDequeue(out var cmd)) cmd();
    }

    // ---- the hot path ----

    /// <summary>
    /// Waits for <paramref name="fd"/>, the lane's wake-up (with <paramref name="woken"/>) or
    /// <paramref name="timeoutMs"/> (-1: no limit); false when asked to stop. A wake-up is taken (the eventfd
    /// emptied) before it returns.
    /// </summary>
    bool Wait(Lane lane, int fd, bool woken, int timeoutMs = -1)
    {
        var fds = stackalloc Native.PollFd[3];
        fds[0] = new Native.PollFd { Fd = fd, Events = Native.POLLIN };
        fds[1] = new Native.PollFd { Fd = _stopFd, Events = Native.POLLIN };
        fds[2] = new Native.PollFd { Fd = lane.CtlFd, Events = Native.POLLIN };
        while (true)
        {
            var rc = Native.poll(fds, woken ? 3u : 2u, timeoutMs);
            if (rc < 0 && Native.Errno == Native.EINTR) continue;
            if (rc < 0 || fds[1].REvents != 0) return false;
            if (rc == 0) return true; // timed out: a lease or a drain burst is due
            if (woken && fds[2].REvents != 0)
            {
                ulong drained;
                Native.read(lane.CtlFd, &drained, 8);
                return true;
            }
            if (fds[0].REvents != 0) return true;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        ulong one = 1;
        Native.write(_stopFd, &one, 8);
        foreach (var t in _threads)
            if (t.IsAlive) t.Join();
        Native.close(_stopFd);
        AbandonHolds();
    }
}
