using System.Runtime.InteropServices;
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
    /// <summary>The most a TUN read can give: a 64 KiB super-packet after its virtio-net header.</summary>
    const int MaxRead = VirtioNetHeader.Size + 65535;

    readonly byte* _read = (byte*)NativeMemory.AlignedAlloc(MaxRead, 64); // egress thread only
    readonly int[] _lengths = new int[BatchSize];

    void EgressLoop()
    {
        var b = _out;
        var c = Egress;
        while (Wait(_tun.Fd, commands: true, HoldTimeoutMs()))
        {
            if (!_commands.IsEmpty) RunCommands();
            if (_holds.Count != 0) TickHolds();
            var table = Table;
            var used = 0; // the batch is empty: Send leaves it so
            while (used < b.Capacity)
            {
                var count = ReadAndCut(b, used, c, out var drained);
                if (count < 0)
                {
                    // No room left for this super-packet's segments: send what is ready, cut it again at slot 0.
                    Send(b, c);
                    used = 0;
                    count = Cut(b, 0, -count, c);
                }
                for (var k = 0; k < count; k++)
                    if (Forward(table, b.Slot(used + k), _lengths[k], c, out var to, out var datagram))
                        b.Append(used + k, b.Slot(used + k), datagram, to);
                used += count;
                if (drained) break;
            }
            Send(b, c);
            Volatile.Write(ref c.Allocated, GC.GetAllocatedBytesForCurrentThread());
        }
    }

    /// <summary>
    /// Reads the next packet from the TUN and cuts it into slots from <paramref name="at"/>: how many
    /// segments, 0 when it was dropped or there was none (<paramref name="drained"/> then says the queue is
    /// empty for now), or minus the length read when the slots left are too few for its segments.
    /// </summary>
    int ReadAndCut(PacketBatch b, int at, FlowCounters c, out bool drained)
    {
        drained = false;
        var max = _tun.VnetHeader ? MaxRead : PacketBatch.MaxPacket;
        var r = Native.read(_tun.Fd, _read, (nuint)max);
        if (r <= 0)
        {
            drained = r == 0 || Native.Errno != Native.EINTR; // EAGAIN: the TUN queue is empty for now
            return 0;
        }
        return Cut(b, at, (int)r, c, retry: at > 0);
    }

    /// <summary>Cuts what the last read left in the read buffer into slots from <paramref name="at"/>.</summary>
    int Cut(PacketBatch b, int at, int length, FlowCounters c, bool retry = false)
    {
        var skip = _tun.VnetHeader ? VirtioNetHeader.Size : 0;
        if (length < skip + Ipv4.MinHeader)
        {
            c.Drops.Add(DropReason.BadInnerPacket);
            return 0;
        }
        var header = _tun.VnetHeader ? VirtioNetHeader.Read(new ReadOnlySpan<byte>(_read, skip)) : default;
        var packet = new ReadOnlySpan<byte>(_read + skip, length - skip);
        var slots = new Span<byte>(b.Slot(at), (b.Capacity - at) * PacketBatch.SlotSize);
        var count = Segmenter.Cut(header, packet, slots, PacketBatch.SlotSize, Wire.HeaderSize,
            _lengths.AsSpan(0, b.Capacity - at), out var refusal);
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
    bool Forward(TranslationTable table, byte* slot, int length, FlowCounters c, out Native.SockAddrIn to,
        out int datagram)
    {
        to = default;
        datagram = 0;
        var packet = new ReadOnlySpan<byte>(slot + Wire.HeaderSize, length);
        if (_anyFlows) TrackPeerSide(packet);
        if (_holds.Count != 0 && Ipv4.IsValid(packet)
            && _holds.TryGetValue(Ipv4.Destination(packet).Value, out var hold))
        {
            // Checked before routing: while a capsule moves, its packets wait here whatever the table says;
            // while its hold drains they join the back, so none overtakes a held one. Also when the drain writes
            // into our own TUN: the capsule just arrived here, and its same-host peers still reach it through the
            // TUN until its local route is attached after the drain. (What the drain writes goes by the delivery
            // route and does not come back out of the TUN.)
            Hold(hold, packet, c);
            return false;
        }
        var verdict = Forwarding.Outbound(table, packet, out var host);
        if (verdict == DropReason.None && length > _maxInner) verdict = DropReason.TooBig;
        if (verdict == DropReason.NoRoute && table.IsLocal(Ipv4.Destination(packet)))
        {
            DeliverLocal(slot + Wire.HeaderSize, length, c);
            return false;
        }
        if (verdict != DropReason.None)
        {
            c.Drops.Add(verdict);
            if (verdict == DropReason.NoRoute && table.IsGateway) AnswerUnreachable(packet, c);
            return false;
        }
        verdict = Seal(host, slot, length, table.Epoch, out datagram);
        if (verdict != DropReason.None)
        {
            c.Drops.Add(verdict);
            return false;
        }
        to = UdpEndpoint.SockAddr(host, _udp.Port);
        c.Bytes += length;
        return true;
    }

    void Hold(Hold hold, ReadOnlySpan<byte> packet, FlowCounters c)
    {
        var stored = hold.Buffer.TryAdd(packet);
        if (stored) c.Held++;
        else
        {
            c.HoldDropped++;
            if (Ipv4.Protocol(packet) == 17) c.HoldDroppedUdp++;
        }
        if (_anyFlows) SpeakForPausedCapsule(packet, stored);
    }

    /// <summary>
    /// A packet for a capsule of this host that came out of the TUN: the capsule just arrived (or
    /// came back) and its local route is not attached yet, so a same-host peer's packet took the
    /// pool's route. Written back into the TUN, it takes the delivery route to the capsule's veth;
    /// dropped, it was lost (seen: 12-18 datagrams of a local sender per move onto its host).
    /// </summary>
    void DeliverLocal(byte* packet, int length, FlowCounters c)
    {
        if (!_tun.Write(packet, length))
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

    /// <summary>
    /// Sends the batch's messages and empties it; one the kernel refuses is counted (each datagram) and skipped.
    /// </summary>
    void Send(PacketBatch b, FlowCounters c)
    {
        var n = b.Messages;
        if (n == 0) return;
        var sent = 0;
        while (sent < n)
        {
            var rc = Native.sendmmsg(_udp.Fd, b.Msgs + sent, (uint)(n - sent), 0);
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
