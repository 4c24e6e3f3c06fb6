using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Core.Offload;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// Egress: from the TUN to the other hosts. Each read gives one packet or, with offloads, a super-packet of up
/// to 64 KiB, which <see cref="Segmenter"/> cuts straight into the batch's slots as the kernel's TSO would. Each
/// segment then goes the way a single packet goes (hold, route, seal in place), and runs of segments for one
/// host leave as one UDP GSO message (<see cref="PacketBatch.Append"/>).
/// </summary>
internal sealed unsafe partial class Engine
{
    void EgressLoop(Lane l)
    {
        var b = l.Out;
        var c = l.Egress;
        var owner = l.Index == 0;
        while (Wait(l, l.Tun.Fd, woken: true, owner ? HoldTimeoutMs() : -1))
        {
            if (owner)
            {
                if (!_commands.IsEmpty) RunCommands();
                if (_holds.Count != 0) TickHolds();
                if (_cuts.Count != 0) AnswerCuts();
            }
            else TakeHolds(l);
            var table = Table;
            var held = Volatile.Read(ref _held);
            var used = 0; // the batch is empty: Send leaves it so
            while (used < b.Capacity)
            {
                var count = ReadAndCut(l, used, c, out var drained);
                if (count < 0)
                {
                    // No room left for this super-packet's segments: send what is ready, cut it again at slot 0.
                    Send(l, b, c);
                    used = 0;
                    count = Cut(l, 0, -count, c);
                }
                for (var k = 0; k < count; k++)
                    if (Forward(l, table, held, b.Slot(used + k), l.Lengths[k], c, out var to, out var datagram))
                        b.Append(used + k, b.Slot(used + k), datagram, to);
                used += count;
                if (drained) break;
            }
            Send(l, b, c);
            Volatile.Write(ref c.Allocated, GC.GetAllocatedBytesForCurrentThread());
        }
    }

    /// <summary>
    /// Reads the next packet from the TUN and cuts it into slots from <paramref name="at"/>: how many
    /// segments, 0 when it was dropped or there was none (<paramref name="drained"/> then says the queue is
    /// empty for now), or minus the length read when the slots left are too few for its segments.
    /// </summary>
    int ReadAndCut(Lane l, int at, FlowCounters c, out bool drained)
    {
        drained = false;
        var max = l.Tun.VnetHeader ? Lane.MaxRead : PacketBatch.MaxPacket;
        var r = Native.read(l.Tun.Fd, l.Read, (nuint)max);
        if (r <= 0)
        {
            drained = r == 0 || Native.Errno != Native.EINTR; // EAGAIN: the TUN queue is empty for now
            return 0;
        }
        return Cut(l, at, (int)r, c, retry: at > 0);
    }

    /// <summary>Cuts what the last read left in the read buffer into slots from <paramref name="at"/>.</summary>
    int Cut(Lane l, int at, int length, FlowCounters c, bool retry = false)
    {
        var b = l.Out;
        var skip = l.Tun.VnetHeader ? VirtioNetHeader.Size : 0;
        if (length < skip + Ipv4.MinHeader)
        {
            c.Drops.Add(DropReason.BadInnerPacket);
            return 0;
        }
        var header = l.Tun.VnetHeader ? VirtioNetHeader.Read(new ReadOnlySpan<byte>(l.Read, skip)) : default;
        var packet = new ReadOnlySpan<byte>(l.Read + skip, length - skip);
        var slots = new Span<byte>(b.Slot(at), (b.Capacity - at) * PacketBatch.SlotSize);
        var count = Segmenter.Cut(header, packet, slots, PacketBatch.SlotSize, Wire.HeaderSize,
            l.Lengths.AsSpan(0, b.Capacity - at), out var refusal);
        if (count > 1) c.SuperPackets++;
        if (count > 0) return count;
        if (refusal == Segmenter.Refusal.TooLarge && retry) return -length;
        c.Drops.Add(refusal == Segmenter.Refusal.TooLarge ? DropReason.TooBig : DropReason.BadInnerPacket);
        return 0;
    }

    /// <summary>
    /// One packet at <paramref name="slot"/> + header: held, delivered here, answered, dropped, or sealed for
    /// the host that holds its destination (then true, with where to send it and the datagram's length).
    /// </summary>
    bool Forward(Lane l, TranslationTable table, Dictionary<uint, Hold> held, byte* slot, int length,
        FlowCounters c, out Native.SockAddrIn to, out int datagram)
    {
        to = default;
        datagram = 0;
        var packet = new ReadOnlySpan<byte>(slot + Wire.HeaderSize, length);
        // Checked before routing: while a capsule moves, its packets wait here whatever the table says;
        // while its hold drains they join the back, so none overtakes a held one. Also when the drain writes
        // into our own TUN: the capsule just arrived here, and its same-host peers still reach it through the
        // TUN until its local route is attached after the drain. (What the drain writes goes by the delivery
        // route and does not come back out of the TUN.)
        if (held.Count != 0 && Ipv4.IsValid(packet) && held.TryGetValue(Ipv4.Destination(packet).Value, out var hold)
            && TryHold(hold, packet, c))
            return false;
        var verdict = Forwarding.Outbound(table, packet, out var host);
        if (verdict == DropReason.None && length > _maxInner) verdict = DropReason.TooBig;
        if (verdict == DropReason.NoRoute && table.IsLocal(Ipv4.Destination(packet)))
        {
            DeliverLocal(l, slot + Wire.HeaderSize, length, c);
            return false;
        }
        if (verdict != DropReason.None)
        {
            c.Drops.Add(verdict);
            if (verdict == DropReason.NoRoute && table.IsGateway) AnswerUnreachable(l, packet, c);
            return false;
        }
        verdict = Seal(l, host, slot, length, table.Epoch, out datagram);
        if (verdict != DropReason.None)
        {
            c.Drops.Add(verdict);
            return false;
        }
        to = UdpEndpoint.SockAddr(host, _port);
        c.Bytes += length;
        return true;
    }

    /// <summary>
    /// Into the hold's buffer, under its lock (any lane's egress thread may add; the owner drains); false when the
    /// hold has just ended, and the packet goes on as any other.
    /// </summary>
    bool TryHold(Hold hold, ReadOnlySpan<byte> packet, FlowCounters c)
    {
        lock (hold.Gate)
        {
            if (hold.Ended) return false;
            var stored = hold.Buffer.TryAdd(packet);
            if (stored) c.Held++;
            else
            {
                c.HoldDropped++;
                if (Ipv4.Protocol(packet) == 17) c.HoldDroppedUdp++;
            }
            if (_anyFlows) SpeakForPausedCapsule(packet, stored);
            return true;
        }
    }

    /// <summary>
    /// A packet for a capsule of this host that came out of the TUN: the capsule just arrived (or
    /// came back) and its local route is not attached yet, so a same-host peer's packet took the
    /// pool's route. Written back into the TUN, it takes the delivery route to the capsule's veth;
    /// dropped, it was lost (seen: 12-18 datagrams of a local sender per move onto its host).
    /// </summary>
    void DeliverLocal(Lane l, byte* packet, int length, FlowCounters c)
    {
        if (!l.Tun.Write(packet, length))
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
    void AnswerUnreachable(Lane l, ReadOnlySpan<byte> packet, FlowCounters c)
    {
        Span<byte> answer = stackalloc byte[Icmp.MaxAnswer];
        var n = Icmp.WriteHostUnreachable(packet, IcmpSource, answer);
        if (n == 0) return;
        // Sent, not written to the TUN: its source is this host's own address, which the kernel
        // would drop as a martian if it came in through an interface.
        if (l.Raw < 0) l.Raw = Native.socket(Native.AF_INET, Native.SOCK_RAW | Native.SOCK_CLOEXEC, Native.IPPROTO_RAW);
        var to = UdpEndpoint.SockAddr(Ipv4.Source(packet), 0);
        fixed (byte* p = answer)
            if (l.Raw >= 0 && Native.sendto(l.Raw, p, (nuint)n, 0, &to, (uint)sizeof(Native.SockAddrIn)) > 0)
                c.Unreachables++;
    }

    /// <summary>
    /// Sends the batch's messages and empties it; one the kernel refuses is counted (each datagram) and skipped.
    /// </summary>
    void Send(Lane l, PacketBatch b, FlowCounters c)
    {
        var n = b.Messages;
        if (n == 0) return;
        var sent = 0;
        while (sent < n)
        {
            var rc = Native.sendmmsg(l.SendFd, b.Msgs + sent, (uint)(n - sent), 0);
            if (rc < 0)
            {
                if (Native.Errno == Native.EINTR) continue;
                // The first message of the rest failed (e.g. no route to that host): count it, go on.
                for (var d = b.Datagrams(sent); d > 0; d--) c.Drops.Add(DropReason.IoError);
                sent++;
                continue;
            }
            for (var i = sent; i < sent + rc; i++)
            {
                var d = b.Datagrams(i);
                c.Packets += d;
                if (d > 1) c.GsoMessages++;
            }
            sent += rc;
        }
        c.Batches++;
        b.Clear();
    }
}
