using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Capsule.Core;
using Capsule.Linux;

namespace Capsule.DataPlane;

/// <summary>Packet and byte counts for one direction; written by one thread only.</summary>
internal sealed class FlowCounters
{
    public long Packets, Bytes, Batches;
    public readonly DropCounters Drops = new();
}

/// <summary>
/// The hot path of a host agent (seed Fig. 8). Two threads, one per direction:
/// egress reads packets the kernel routed to the TUN, wraps each for the host that holds its
/// destination and sends the batch with one sendmmsg; ingress takes a batch with one recvmmsg,
/// checks each datagram and writes the inner packet to the TUN, whence the kernel delivers it to
/// the capsule's veth. The translation table is read once per batch; nothing allocates per packet.
/// </summary>
internal sealed unsafe class Engine : IDisposable
{
    public const int BatchSize = 64;

    readonly Tun _tun;
    readonly UdpEndpoint _udp;
    readonly int _stopFd;
    readonly int _maxInner;
    readonly PacketBatch _out = new(BatchSize);
    readonly PacketBatch _in = new(BatchSize);
    readonly Thread _egress, _ingress;
    TranslationTable _table = TranslationTable.Empty;
    int _disposed;

    public FlowCounters Egress { get; } = new();
    public FlowCounters Ingress { get; } = new();
    public TranslationTable Table => Volatile.Read(ref _table);

    public Engine(Tun tun, UdpEndpoint udp, int underlayMtu)
    {
        _tun = tun;
        _udp = udp;
        _maxInner = underlayMtu - Wire.Overhead;
        _stopFd = Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK);
        Native.ThrowIfFailed(_stopFd, "eventfd");
        _egress = new Thread(EgressLoop) { Name = "capsule-egress", IsBackground = true };
        _ingress = new Thread(IngressLoop) { Name = "capsule-ingress", IsBackground = true };
    }

    public void Start() { _egress.Start(); _ingress.Start(); }

    /// <summary>Publishes a new table; the next batch in each direction uses it.</summary>
    public void Publish(TranslationTable table) => Volatile.Write(ref _table, table);

    /// <summary>Waits for readability of <paramref name="fd"/>; false when asked to stop.</summary>
    bool WaitReadable(int fd)
    {
        var fds = stackalloc Native.PollFd[2];
        fds[0] = new Native.PollFd { Fd = fd, Events = Native.POLLIN };
        fds[1] = new Native.PollFd { Fd = _stopFd, Events = Native.POLLIN };
        while (true)
        {
            var rc = Native.poll(fds, 2, -1);
            if (rc < 0 && Native.Errno == Native.EINTR) continue;
            if (rc < 0 || fds[1].REvents != 0) return false;
            if (fds[0].REvents != 0) return true;
        }
    }

    void EgressLoop()
    {
        var b = _out;
        var c = Egress;
        var tunFd = _tun.Fd;
        while (WaitReadable(tunFd))
        {
            var table = Table;
            var n = 0;
            while (n < b.Capacity)
            {
                var slot = b.Slot(n);
                var r = Native.read(tunFd, slot + Wire.HeaderSize, (nuint)(PacketBatch.SlotSize - Wire.HeaderSize));
                if (r <= 0)
                {
                    if (r < 0 && Native.Errno == Native.EINTR) continue;
                    break; // EAGAIN: the TUN queue is drained for now
                }
                var packet = new ReadOnlySpan<byte>(slot + Wire.HeaderSize, (int)r);
                var verdict = Forwarding.Outbound(table, packet, out var host);
                if (verdict == DropReason.None && r > _maxInner) verdict = DropReason.TooBig;
                if (verdict != DropReason.None) { c.Drops.Add(verdict); continue; }
                Wire.WriteHeader(new Span<byte>(slot, Wire.HeaderSize), Wire.Kind.Ipv4, table.Epoch);
                b.Addrs[n] = UdpEndpoint.SockAddr(host, _udp.Port);
                b.Iovs[n].Len = (nuint)(r + Wire.HeaderSize);
                c.Bytes += r;
                n++;
            }
            if (n > 0) Send(b, n, c);
        }
    }

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
        while (WaitReadable(udpFd))
        {
            var n = Native.recvmmsg(udpFd, b.Msgs, (uint)b.Capacity, Native.MSG_DONTWAIT, null);
            if (n <= 0) continue;
            var table = Table;
            for (var i = 0; i < n; i++)
            {
                var len = (int)b.Msgs[i].Len;
                var slot = b.Slot(i);
                var from = new Locator(BinaryPrimitives.ReverseEndianness(b.Addrs[i].AddrBE));
                var datagram = new ReadOnlySpan<byte>(slot, len);
                var verdict = (b.Msgs[i].Hdr.Flags & MsgTrunc) != 0 && table.IsKnownHost(from)
                    ? DropReason.Malformed
                    : Forwarding.Inbound(table, from, datagram, out _);
                if (verdict != DropReason.None) { c.Drops.Add(verdict); continue; }
                if (Native.write(tunFd, slot + Wire.HeaderSize, (nuint)(len - Wire.HeaderSize)) < 0)
                {
                    c.Drops.Add(DropReason.IoError);
                    continue;
                }
                c.Packets++;
                c.Bytes += len - Wire.HeaderSize;
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
        _out.Dispose();
        _in.Dispose();
    }
}
