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

    public static UdpEndpoint Bind(Locator address, int port, bool coalesce = true, int bufferBytes = 4 << 20)
    {
        // Blocking: a full send buffer then stalls the egress thread, which backs pressure up into
        // the TUN queue instead of dropping in user space. Receives use MSG_DONTWAIT after poll.
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
        var gro = coalesce && Native.setsockopt(fd, Native.SOL_UDP, Native.UDP_GRO, &one, 4) == 0;
        var sa = SockAddr(address, port);
        if (Native.bind(fd, &sa, (uint)sizeof(Native.SockAddrIn)) < 0)
        {
            var e = Native.Errno;
            Native.close(fd);
            Native.Throw($"bind UDP {address}:{port}", e);
        }
        return new UdpEndpoint(fd, address, port, gro);
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
