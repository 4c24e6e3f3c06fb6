using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>The agent's host-to-host UDP socket, a raw fd so the data plane can batch with recvmmsg/sendmmsg.</summary>
internal sealed unsafe class UdpEndpoint : IDisposable
{
    public int Fd { get; private set; }
    public Locator Address { get; }
    public int Port { get; }

    /// <summary>
    /// The kernel hands over runs of datagrams from one sender as one message (UDP_GRO, with their size in a
    /// control message): a peer's UDP GSO send then crosses the underlay and arrives whole.
    /// </summary>
    public bool Gro { get; }

    UdpEndpoint(int fd, Locator address, int port, bool gro)
    {
        Fd = fd;
        Address = address;
        Port = port;
        Gro = gro;
    }

    public static UdpEndpoint Bind(Locator address, int port, bool coalesce = true, bool reusePort = false,
        int bufferBytes = 4 << 20)
    {
        // Blocking: a full send buffer then stalls the lane's egress thread, which backs pressure up into
        // the TUN queue instead of dropping in user space. Receives use MSG_DONTWAIT after poll.
        var fd = Socket(bufferBytes);
        int one = 1;
        if (reusePort) Native.setsockopt(fd, Native.SOL_SOCKET, Native.SO_REUSEPORT, &one, 4);
        var gro = coalesce && Native.setsockopt(fd, Native.SOL_UDP, Native.UDP_GRO, &one, 4) == 0;
        Bind(fd, address, port);
        return new UdpEndpoint(fd, address, port, gro);
    }

    /// <summary>
    /// A socket that only sends, from <paramref name="port"/>: lane k of the data plane sends from the port k above
    /// the one everyone receives on, so a peer's <see cref="SpreadByPort"/> gives each lane's datagrams to one
    /// receiving lane of its own. Null when the port is taken (the lane then sends from the receiving port).
    /// </summary>
    public static UdpEndpoint? TryBindSender(Locator address, int port, int bufferBytes = 4 << 20)
    {
        var fd = Socket(bufferBytes);
        var sa = SockAddr(address, port);
        if (Native.bind(fd, &sa, (uint)sizeof(Native.SockAddrIn)) == 0)
            return new UdpEndpoint(fd, address, port, gro: false);
        Native.close(fd);
        return null;
    }

    /// <summary>
    /// Sets the SO_REUSEPORT group this socket belongs to (<paramref name="lanes"/> sockets on one port) to give a
    /// datagram to socket (source port mod lanes), a classic BPF program: every datagram of one sending lane goes
    /// to one receiving lane, in order, and the lanes of a peer spread over ours. The kernel's own choice, a hash
    /// of the addresses and ports, would often put two lanes on one socket. False when the kernel refused it (the
    /// hash then spreads them).
    /// </summary>
    public bool SpreadByPort(int lanes)
    {
        // A reuseport program sees the datagram from its UDP payload on; SKF_NET_OFF reaches back to the IP header,
        // and 20 past it (no IP options on the underlay) is the UDP source port.
        const int SkfNetOff = -0x100000;
        var program = stackalloc Native.SockFilter[3];
        program[0] = new Native.SockFilter { Code = 0x28, K = unchecked((uint)(SkfNetOff + 20)) }; // ldh [sport]
        program[1] = new Native.SockFilter { Code = 0x94, K = (uint)lanes };                      // mod #lanes
        program[2] = new Native.SockFilter { Code = 0x16 };                                       // ret a
        var fprog = new Native.SockFprog { Len = 3, Filter = program };
        return Native.setsockopt(Fd, Native.SOL_SOCKET, Native.SO_ATTACH_REUSEPORT_CBPF, &fprog,
            (uint)sizeof(Native.SockFprog)) == 0;
    }

    static int Socket(int bufferBytes)
    {
        var fd = Native.socket(Native.AF_INET, Native.SOCK_DGRAM | Native.SOCK_CLOEXEC, 0);
        Native.ThrowIfFailed(fd, "socket(AF_INET, SOCK_DGRAM)");
        int one = 1, buf = bufferBytes, pmtu = Native.IP_PMTUDISC_DONT;
        Native.setsockopt(fd, Native.SOL_SOCKET, Native.SO_REUSEADDR, &one, 4);
        // FORCE variants ignore rmem_max/wmem_max (we are root); fall back quietly if refused.
        if (Native.setsockopt(fd, Native.SOL_SOCKET, Native.SO_RCVBUFFORCE, &buf, 4) < 0)
            Native.setsockopt(fd, Native.SOL_SOCKET, Native.SO_RCVBUF, &buf, 4);
        if (Native.setsockopt(fd, Native.SOL_SOCKET, Native.SO_SNDBUFFORCE, &buf, 4) < 0)
            Native.setsockopt(fd, Native.SOL_SOCKET, Native.SO_SNDBUF, &buf, 4);
        // Inner MTU is sized so wrapped packets fit the underlay; never let the kernel's PMTU cache
        // shrink the outer path under us.
        Native.setsockopt(fd, Native.IPPROTO_IP, Native.IP_MTU_DISCOVER, &pmtu, 4);
        return fd;
    }

    static void Bind(int fd, Locator address, int port)
    {
        var sa = SockAddr(address, port);
        if (Native.bind(fd, &sa, (uint)sizeof(Native.SockAddrIn)) >= 0) return;
        var e = Native.Errno;
        Native.close(fd);
        Native.Throw($"bind UDP {address}:{port}", e);
    }

    public static Native.SockAddrIn SockAddr(Locator address, int port) => new()
    {
        Family = Native.AF_INET,
        PortBE = (ushort)System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((ushort)port),
        AddrBE = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(address.Value),
    };

    public void Dispose()
    {
        if (Fd >= 0)
        {
            Native.close(Fd);
            Fd = -1;
        }
    }
}
