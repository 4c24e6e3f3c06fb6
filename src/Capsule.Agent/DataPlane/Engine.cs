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
}

/// <summary>
/// The hot path of a host agent (seed Fig. 8). Two threads, one per direction:
/// egress (Engine.Egress.cs) reads packets the kernel routed to the TUN, cuts super-packets into
/// segments, wraps each for the host that holds its destination and sends the batch with one
/// sendmmsg, runs for one host as UDP GSO messages; ingress (Engine.Ingress.cs) takes a batch with
/// one recvmmsg, checks each datagram, coalesces a flow's TCP segments and writes the inner packets
/// to the TUN, whence the kernel delivers them to the capsule's veth. The translation table is read
/// once per batch; nothing allocates per packet (a sender's entry in <see cref="ReceivedFrom"/> is
/// made once, when it first sends to a capsule).
///
/// Hold and flush (seed Fig. 5B/6) run on the egress thread itself, as commands between batches
/// and as timed work between them (leases, paced drains; see Engine.Holds.cs): a hold starts at a
/// batch boundary, so "sent before the cut" is exactly what the key's counter says, and a drain sends
/// every held packet before any packet read after the release, so order is kept.
/// </summary>
internal sealed unsafe partial class Engine : IDisposable
{
    public const int BatchSize = 64;

    readonly Tun _tun;
    readonly UdpEndpoint _udp;
    readonly int _stopFd, _ctlFd;
    readonly int _maxInner;
    readonly string? _holdSpool;
    readonly PeerKeys _keys;
    readonly PacketBatch _out;
    readonly PacketBatch _in;
    readonly Thread _egress, _ingress;
    readonly ConcurrentQueue<Action> _commands = new();
    TranslationTable _table = TranslationTable.Empty;
    int _disposed;

    public FlowCounters Egress { get; } = new();
    public FlowCounters Ingress { get; } = new();
    /// <summary>
    /// Which hosts have sent to which capsules: a set of keys host &lt;&lt; 32 | locator (ingress thread adds).
    /// </summary>
    public ConcurrentDictionary<ulong, byte> ReceivedFrom { get; } = new();
    public TranslationTable Table => Volatile.Read(ref _table);
    /// <summary>Source of the ICMP unreachable answers a gateway gives.</summary>
    public Locator IcmpSource { get; set; }

    /// <param name="holdSpool">
    /// Folder for the holds' spool files (what a hold acknowledged outlives the agent); null keeps
    /// holds in memory alone.
    /// </param>
    public Engine(Tun tun, UdpEndpoint udp, int underlayMtu, PeerKeys keys, string? holdSpool = null)
    {
        _holdSpool = holdSpool;
        _keys = keys;
        _tun = tun;
        _udp = udp;
        _maxInner = underlayMtu - Wire.Overhead;
        // UDP GSO goes with the TUN's offloads: one setting turns every offload on or off.
        _out = new PacketBatch(BatchSize) { UdpSegmentation = tun.VnetHeader };
        // A GRO message may be 64 KiB of datagrams; without GRO each is one, and more fit one recvmmsg.
        _in = udp.Gro ? new PacketBatch(IngressSlots, PacketBatch.GroSlotSize) : new PacketBatch(BatchSize);
        _toTun = WriteCoalesced;
        _stopFd = Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK);
        Native.ThrowIfFailed(_stopFd, "eventfd");
        _ctlFd = Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK);
        Native.ThrowIfFailed(_ctlFd, "eventfd");
        _egress = new Thread(EgressLoop) { Name = "capsule-egress", IsBackground = true };
        _ingress = new Thread(IngressLoop) { Name = "capsule-ingress", IsBackground = true };
    }

    public void Start()
    {
        _egress.Start();
        _ingress.Start();
    }

    /// <summary>Publishes a new table; the next batch in each direction uses it.</summary>
    public void Publish(TranslationTable table) => Volatile.Write(ref _table, table);

    // ---- control: hold and flush (Engine.Holds.cs), run on the egress thread ----

    /// <summary>
    /// Runs <paramref name="start"/> on the egress thread, between batches; it completes the task
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
        ulong one = 1;
        Native.write(_ctlFd, &one, 8);
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
    public ulong NotYetReceived(Locator host, HoldCut cut) => cut.Missing(_keys.OpenedFrom(host, cut.KeyId));

    void RunCommands()
    {
        ulong drained;
        Native.read(_ctlFd, &drained, 8);
        while (_commands.TryDequeue(out var cmd)) cmd();
    }

    // ---- the hot path ----

    /// <summary>
    /// Waits for <paramref name="fd"/>, a command or <paramref name="timeoutMs"/> (-1: no limit);
    /// false when asked to stop.
    /// </summary>
    bool Wait(int fd, bool commands, int timeoutMs = -1)
    {
        var fds = stackalloc Native.PollFd[3];
        fds[0] = new Native.PollFd { Fd = fd, Events = Native.POLLIN };
        fds[1] = new Native.PollFd { Fd = _stopFd, Events = Native.POLLIN };
        fds[2] = new Native.PollFd { Fd = _ctlFd, Events = Native.POLLIN };
        while (true)
        {
            var rc = Native.poll(fds, commands ? 3u : 2u, timeoutMs);
            if (rc < 0 && Native.Errno == Native.EINTR) continue;
            if (rc < 0 || fds[1].REvents != 0) return false;
            if (rc == 0) return true; // timed out: a lease or a drain burst is due
            if (fds[0].REvents != 0 || (commands && fds[2].REvents != 0)) return true;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        ulong one = 1;
        Native.write(_stopFd, &one, 8);
        if (_egress.IsAlive) _egress.Join();
        if (_ingress.IsAlive) _ingress.Join();
        Native.close(_stopFd);
        if (_raw >= 0) Native.close(_raw);
        Native.close(_ctlFd);
        AbandonHolds();
        _out.Dispose();
        _in.Dispose();
        System.Runtime.InteropServices.NativeMemory.AlignedFree(_read);
    }
}
