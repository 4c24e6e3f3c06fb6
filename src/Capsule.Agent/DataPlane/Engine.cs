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

/// <summary>Packets and bytes of one flow between a host and a capsule (the unit the migration cut counts).</summary>
internal sealed class FlowCount
{
    public long Packets, Bytes;
}

/// <summary>
/// The hot path of a host agent (seed Fig. 8). Two threads, one per direction:
/// egress reads packets the kernel routed to the TUN, wraps each for the host that holds its
/// destination and sends the batch with one sendmmsg; ingress takes a batch with one recvmmsg,
/// checks each datagram and writes the inner packet to the TUN, whence the kernel delivers it to
/// the capsule's veth. The translation table is read once per batch; nothing allocates per packet
/// (a flow's counter is allocated once, when the flow is first seen).
///
/// Hold and flush (seed Fig. 5B/6) run on the egress thread itself, as commands between batches
/// and as timed work between them (leases, paced drains; see Engine.Holds.cs): a hold starts at a
/// batch boundary, so "sent before the cut" is exactly what the counters say, and a drain sends
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
    readonly PacketBatch _out = new(BatchSize);
    readonly PacketBatch _in = new(BatchSize);
    readonly Thread _egress, _ingress;
    readonly ConcurrentQueue<Action> _commands = new();
    TranslationTable _table = TranslationTable.Empty;
    int _disposed;

    public FlowCounters Egress { get; } = new();
    public FlowCounters Ingress { get; } = new();
    /// <summary>
    /// Packets sent per (host, destination locator), key host &lt;&lt; 32 | locator (egress thread writes,
    /// anyone reads).
    /// </summary>
    public ConcurrentDictionary<ulong, FlowCount> SentTo { get; } = new();
    /// <summary>
    /// Packets arrived per (sending host, destination locator), key host &lt;&lt; 32 | locator (ingress thread writes).
    /// </summary>
    public ConcurrentDictionary<ulong, FlowCount> ReceivedFrom { get; } = new();
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
    public IEnumerable<(Locator Host, long Packets)> SendersTo(Locator locator)
    {
        foreach (var (key, f) in ReceivedFrom)
            if ((uint)key == locator.Value) yield return (new Locator((uint)(key >> 32)), Volatile.Read(ref f.Packets));
    }

    public long ReceivedFromHost(Locator host, Locator locator) =>
        ReceivedFrom.TryGetValue(Key(host, locator), out var f) ? Volatile.Read(ref f.Packets) : 0;

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

    void Count(ulong key, long bytes)
    {
        if (!SentTo.TryGetValue(key, out var f)) f = SentTo.GetOrAdd(key, _ => new FlowCount());
        f.Packets++;
        f.Bytes += bytes;
    }

    void EgressLoop()
    {
        var b = _out;
        var c = Egress;
        var tunFd = _tun.Fd;
        while (Wait(tunFd, commands: true, HoldTimeoutMs()))
        {
            if (!_commands.IsEmpty) RunCommands();
            if (_holds.Count != 0) TickHolds();
            var table = Table;
            var n = 0;
            while (n < b.Capacity)
            {
                var slot = b.Slot(n);
                var r = Native.read(tunFd, slot + Wire.HeaderSize, PacketBatch.MaxPacket);
                if (r <= 0)
                {
                    if (r < 0 && Native.Errno == Native.EINTR) continue;
                    break; // EAGAIN: the TUN queue is drained for now
                }
                var packet = new ReadOnlySpan<byte>(slot + Wire.HeaderSize, (int)r);
                if (_anyFlows) TrackPeerSide(packet);
                if (_holds.Count != 0 && Ipv4.IsValid(packet)
                    && _holds.TryGetValue(Ipv4.Destination(packet).Value, out var hold))
                {
                    // Checked before routing: while a capsule moves, its packets wait here whatever the table says;
                    // while its hold drains they join the back, so none overtakes a held one. Also when the
                    // drain writes into our own TUN: the capsule just arrived here, and its same-host peers
                    // still reach it through the TUN until its local route is attached after the drain. (What
                    // the drain writes goes by the delivery route and does not come back out of the TUN.)
                    var stored = hold.Buffer.TryAdd(packet);
                    if (stored) c.Held++;
                    else
                    {
                        c.HoldDropped++;
                        if (Ipv4.Protocol(packet) == 17) c.HoldDroppedUdp++;
                    }
                    if (_anyFlows) SpeakForPausedCapsule(packet, stored);
                    continue;
                }
                var verdict = Forwarding.Outbound(table, packet, out var host);
                if (verdict == DropReason.None && r > _maxInner) verdict = DropReason.TooBig;
                if (verdict == DropReason.NoRoute && table.IsLocal(Ipv4.Destination(packet)))
                {
                    DeliverLocal(slot + Wire.HeaderSize, r, c);
                    continue;
                }
                if (verdict != DropReason.None)
                {
                    c.Drops.Add(verdict);
                    if (verdict == DropReason.NoRoute && table.IsGateway) AnswerUnreachable(packet, c);
                    continue;
                }
                var flow = Key(host, Ipv4.Destination(packet)); // read before sealing encrypts the packet
                verdict = Seal(host, slot, (int)r, table.Epoch, out var datagram);
                if (verdict != DropReason.None)
                {
                    c.Drops.Add(verdict);
                    continue;
                }
                b.Addrs[n] = UdpEndpoint.SockAddr(host, _udp.Port);
                b.Iovs[n].Len = (nuint)datagram;
                Count(flow, r);
                c.Bytes += r;
                n++;
            }
            if (n > 0) Send(b, n, c);
        }
    }

    /// <summary>
    /// A packet for a capsule of this host that came out of the TUN: the capsule just arrived (or
    /// came back) and its local route is not attached yet, so a same-host peer's packet took the
    /// pool's route. Written back into the TUN, it takes the delivery route to the capsule's veth;
    /// dropped, it was lost (seen: 12-18 datagrams of a local sender per move onto its host).
    /// </summary>
    void DeliverLocal(byte* packet, nint length, FlowCounters c)
    {
        if (Native.write(_tun.Fd, packet, (nuint)length) < 0)
        {
            c.Drops.Add(DropReason.IoError);
            return;
        }
        c.DeliveredLocal++;
    }

    /// <summary>
    /// A gateway answers as a router would for a locator no capsule holds; the answer goes to the
    /// ordinary host and nothing reaches the overlay. Rare, so a stack buffer is fine.
    /// </summary>
    void AnswerUnreachable(ReadOnlySpan<byte> packet, FlowCounters c)
    {
        Span<byte> answer = stackalloc byte[Icmp.MaxAnswer];
        var n = Icmp.WriteHostUnreachable(packet, IcmpSource, answer);
        if (n == 0) return;
        // Sent, not written to the TUN: its source is this host's own address, which the kernel
        // would drop as a martian if it came in through an interface.
        if (_raw < 0) _raw = Native.socket(Native.AF_INET, Native.SOCK_RAW | Native.SOCK_CLOEXEC, Native.IPPROTO_RAW);
        var to = UdpEndpoint.SockAddr(Ipv4.Source(packet), 0);
        fixed (byte* p = answer)
            if (_raw >= 0 && Native.sendto(_raw, p, (nuint)n, 0, &to, (uint)sizeof(Native.SockAddrIn)) > 0)
                c.Unreachables++;
    }

    int _raw = -1; // egress thread only

    void Send(PacketBatch b, int n, FlowCounters c)
    {
        var sent = 0;
        while (sent < n)
        {
            var rc = Native.sendmmsg(_udp.Fd, b.Msgs + sent, (uint)(n - sent), 0);
            if (rc < 0)
            {
                if (Native.Errno == Native.EINTR) continue;
                // The first message of the rest failed (e.g. no route to that host): count it, go on.
                c.Drops.Add(DropReason.IoError);
                sent++;
                continue;
            }
            sent += rc;
            c.Packets += rc;
        }
        c.Batches++;
    }

    void IngressLoop()
    {
        var b = _in;
        var c = Ingress;
        var udpFd = _udp.Fd;
        var tunFd = _tun.Fd;
        while (Wait(udpFd, commands: false))
        {
            var n = Native.recvmmsg(udpFd, b.Msgs, (uint)b.Capacity, Native.MSG_DONTWAIT, null);
            if (n <= 0) continue;
            var table = Table;
            for (var i = 0; i < n; i++)
            {
                var len = (int)b.Msgs[i].Len;
                var slot = b.Slot(i);
                var from = new Locator(BinaryPrimitives.ReverseEndianness(b.Addrs[i].AddrBE));
                var verdict = (b.Msgs[i].Hdr.Flags & MsgTrunc) != 0 && table.IsKnownHost(from)
                    ? DropReason.Malformed
                    : Open(table, from, slot, len, out len);
                // The cut counts what arrived, authentic, from a known host, delivered or not: a migration waits
                // for packets to be here, and one this host then refuses has arrived all the same.
                if (len >= Ipv4.MinHeader && verdict is not (DropReason.UnknownHost or DropReason.Malformed
                        or DropReason.BadVersion or DropReason.BadTag or DropReason.Replay or DropReason.UnknownKey))
                {
                    var key = Key(from, Ipv4.Destination(new ReadOnlySpan<byte>(slot + Wire.HeaderSize, len)));
                    if (!ReceivedFrom.TryGetValue(key, out var f)) f = ReceivedFrom.GetOrAdd(key, _ => new FlowCount());
                    f.Packets++;
                    f.Bytes += len;
                }
                if (verdict != DropReason.None)
                {
                    c.Drops.Add(verdict);
                    continue;
                }
                if (slot[Wire.HeaderSize + 9] == Tcp.Protocol)
                    TrackCapsuleSide(new Span<byte>(slot + Wire.HeaderSize, len));
                if (Native.write(tunFd, slot + Wire.HeaderSize, (nuint)len) < 0)
                {
                    c.Drops.Add(DropReason.IoError);
                    continue;
                }
                c.Packets++;
                c.Bytes += len;
            }
            c.Batches++;
            b.ResetForReceive(n);
        }
    }

    const int MsgTrunc = 0x20;

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
    }
}
