using System.Runtime.InteropServices;
using Capsule.Agent.Linux;
using Capsule.Core.Offload;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// One queue of the data plane: a queue of the TUN and a UDP socket, each with a thread of its own (egress reads
/// the TUN queue and sends, ingress receives and writes to the TUN queue), and everything those threads touch
/// per packet. The kernel gives a flow's packets to one TUN queue, and a peer's lane to one of our sockets, so a
/// flow stays on one lane and its order holds. Lane 0's egress thread also runs the engine's control (holds,
/// commands); see <see cref="Engine"/>.
/// </summary>
internal sealed unsafe class Lane : IDisposable
{
    /// <summary>The most a TUN read can give: a 64 KiB super-packet after its virtio-net header.</summary>
    public const int MaxRead = VirtioNetHeader.Size + 65535;

    public int Index { get; }
    public Tun Tun { get; }

    /// <summary>Receives: one of a SO_REUSEPORT group, one socket per lane, all on the agent's port.</summary>
    public UdpEndpoint Udp { get; }

    /// <summary>
    /// Sends: a socket of the lane's own port (agent's port + lane), so the peer gives what this lane sends to one
    /// lane of its own; the receiving socket when that port could not be had.
    /// </summary>
    public int SendFd => (_sender ?? Udp).Fd;

    readonly UdpEndpoint? _sender;

    public PacketBatch Out { get; }
    public PacketBatch In { get; }

    /// <summary>The TUN read buffer (egress thread).</summary>
    public byte* Read { get; } = (byte*)NativeMemory.AlignedAlloc(MaxRead, 64);

    /// <summary>Segment lengths of the super-packet last cut (egress thread).</summary>
    public int[] Lengths { get; } = new int[Engine.BatchSize];

    public Coalescer Coalescer { get; } = new();

    /// <summary>What the coalescer hands on, to the TUN: made once, since a method group per call allocates.</summary>
    public CoalescedPacket ToTun { get; set; } = null!;

    public FlowCounters Egress { get; } = new();
    public FlowCounters Ingress { get; } = new();

    /// <summary>Wakes the egress thread: a command or a cut's answer (lane 0), a change of holds (others).</summary>
    public int CtlFd { get; }

    /// <summary>The version of the holds this lane's egress thread works with (set between its batches).</summary>
    public long SeenHolds;

    /// <summary>Raw socket for the ICMP answers a gateway gives, made at the first (egress thread).</summary>
    public int Raw = -1;

    public Lane(int index, Tun tun, UdpEndpoint udp, UdpEndpoint? sender)
    {
        Index = index;
        Tun = tun;
        Udp = udp;
        _sender = sender;
        // UDP GSO goes with the TUN's offloads: one setting turns every offload on or off.
        Out = new PacketBatch(Engine.BatchSize) { UdpSegmentation = tun.VnetHeader };
        // A GRO message may be 64 KiB of datagrams; without GRO each is one, and more fit one recvmmsg.
        In = udp.Gro
            ? new PacketBatch(Engine.IngressSlots, PacketBatch.GroSlotSize)
            : new PacketBatch(Engine.BatchSize);
        CtlFd = Native.eventfd(0, Native.EFD_CLOEXEC | Native.EFD_NONBLOCK);
        Native.ThrowIfFailed(CtlFd, "eventfd");
    }

    public void Wake()
    {
        ulong one = 1;
        Native.write(CtlFd, &one, 8);
    }

    /// <summary>After the lane's threads have ended: the fds and memory go; the TUN and sockets with them.</summary>
    public void Dispose()
    {
        Native.close(CtlFd);
        if (Raw >= 0) Native.close(Raw);
        Out.Dispose();
        In.Dispose();
        NativeMemory.AlignedFree(Read);
        _sender?.Dispose();
        Udp.Dispose();
        Tun.Dispose();
    }
}
