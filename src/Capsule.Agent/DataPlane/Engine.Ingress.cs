using System.Buffers.Binary;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Core.Offload;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// Ingress: from the other hosts to the TUN. One recvmmsg takes a batch of messages; with UDP GRO a message is
/// a run of datagrams from one host, each checked and opened on its own. The inner packets then pass through a
/// <see cref="Coalescer"/>, which joins consecutive TCP segments of a flow into one super-packet, so the kernel
/// takes one write and one pass through its stack for many segments.
/// </summary>
internal sealed unsafe partial class Engine
{
    /// <summary>Messages per recvmmsg; each slot takes a whole coalesced message (up to 64 KiB).</summary>
    public const int IngressSlots = 32;

    const int MsgTrunc = 0x20;

    void IngressLoop(Lane l)
    {
        var b = l.In;
        var c = l.Ingress;
        var udpFd = l.Udp.Fd;
        b.ResetForReceive(b.Capacity);
        while (Wait(l, udpFd, woken: false))
        {
            var n = Native.recvmmsg(udpFd, b.Msgs, (uint)b.Capacity, Native.MSG_DONTWAIT, null);
            if (n <= 0) continue;
            var table = Table;
            for (var i = 0; i < n; i++) Receive(l, table, b, i, c);
            if (l.Tun.VnetHeader) l.Coalescer.Flush(l.ToTun);
            c.Batches++;
            b.ResetForReceive(n);
            Volatile.Write(ref c.Allocated, GC.GetAllocatedBytesForCurrentThread());
        }
    }

    /// <summary>Message <paramref name="i"/> of a batch: one datagram, or a run of them that UDP GRO joined.</summary>
    void Receive(Lane l, TranslationTable table, PacketBatch b, int i, FlowCounters c)
    {
        var from = new Locator(BinaryPrimitives.ReverseEndianness(b.Addrs[i].AddrBE));
        if ((b.Msgs[i].Hdr.Flags & MsgTrunc) != 0)
        {
            c.Drops.Add(table.IsKnownHost(from) ? DropReason.Malformed : DropReason.UnknownHost);
            return;
        }
        var total = (int)b.Msgs[i].Len;
        var size = b.GroSize(i);
        if (size <= 0 || size >= total) size = total;
        else c.GsoMessages++;
        var slot = b.Slot(i);
        for (var at = 0; at < total; at += size)
            Datagram(l, table, from, slot + at, Math.Min(size, total - at), c);
    }

    void Datagram(Lane l, TranslationTable table, Locator from, byte* datagram, int length, FlowCounters c)
    {
        var verdict = Open(l, table, from, datagram, length, out var len);
        var packet = new Span<byte>(datagram + Wire.HeaderSize, len);
        // Who has sent to a capsule, authentic and from a known host, delivered or not: the hosts a move of it
        // asks to hold. (The cut itself goes by the keys' sequence: HoldCut.)
        if (len >= Ipv4.MinHeader && verdict is not (DropReason.UnknownHost or DropReason.Malformed
                or DropReason.BadVersion or DropReason.BadTag or DropReason.Replay or DropReason.UnknownKey))
        {
            var key = Key(from, Ipv4.Destination(packet));
            if (!ReceivedFrom.ContainsKey(key)) ReceivedFrom.TryAdd(key, 0); // a lock-free read once known
        }
        if (verdict != DropReason.None)
        {
            c.Drops.Add(verdict);
            return;
        }
        if (packet[9] == Tcp.Protocol) TrackCapsuleSide(packet);
        c.Packets++;
        c.Bytes += len;
        if (l.Tun.VnetHeader) l.Coalescer.Add(packet, l.ToTun);
        else if (!l.Tun.Write(datagram + Wire.HeaderSize, len)) c.Drops.Add(DropReason.IoError);
    }

    /// <summary>
    /// What the coalescer hands on, written to the TUN. A refused write loses every segment in it; it is
    /// counted once, as one I/O error (the packet counters already counted its segments as delivered).
    /// </summary>
    void WriteCoalesced(Lane l, VirtioNetHeader header, ReadOnlySpan<byte> packet)
    {
        fixed (byte* p = packet)
        {
            if (!l.Tun.Write(header, p, packet.Length)) l.Ingress.Drops.Add(DropReason.IoError);
            else if (header.Gso != VirtioNetHeader.GsoNone) l.Ingress.SuperPackets++;
        }
    }
}
