using System.Text;
using Capsule.Core.Offload;

namespace Capsule.Agent.Linux;

/// <summary>
/// A TUN device owned by the agent: the kernel routes non-local capsule traffic into it. With offloads on
/// (the default) it is opened with IFF_VNET_HDR and told that its reader segments TCP and UDP and completes
/// checksums itself (TUNSETOFFLOAD), so the kernel hands over super-packets of up to 64 KiB, each after a
/// <see cref="VirtioNetHeader"/>, and takes them back the same way: one read or write for many segments, which
/// is what lifts a userspace data plane from packet-at-a-time speed (wireguard-go does the same).
/// </summary>
internal sealed unsafe class Tun : IDisposable
{
    public int Fd { get; private set; }
    public string Name { get; }

    /// <summary>Every read and write carries a virtio-net header first.</summary>
    public bool VnetHeader { get; }

    Tun(int fd, string name, bool vnetHeader)
    {
        Fd = fd;
        Name = name;
        VnetHeader = vnetHeader;
    }

    /// <summary>
    /// Creates (or attaches to) TUN <paramref name="name"/> in the calling thread's network namespace, with
    /// offloads unless <paramref name="offloads"/> is false. With <paramref name="multiQueue"/>, each open of the
    /// same name is one more queue of one device (IFF_MULTI_QUEUE): the kernel hands each flow's packets to one
    /// queue, the one its packets were last written to, so each queue can have a reader thread of its own.
    /// </summary>
    public static Tun Open(string name, bool offloads = true, bool multiQueue = false)
    {
        var bytes = Encoding.ASCII.GetBytes(name);
        if (bytes.Length > 15) throw new ArgumentException($"interface name '{name}' is longer than 15 characters");
        var fd = Native.open("/dev/net/tun", Native.O_RDWR | Native.O_NONBLOCK | Native.O_CLOEXEC);
        Native.ThrowIfFailed(fd, "open /dev/net/tun (is the tun module available? see `capsule doctor`)");
        var req = new Native.IfReq { Flags = (short)(Native.IFF_TUN | Native.IFF_NO_PI) };
        if (offloads) req.Flags |= Native.IFF_VNET_HDR;
        if (multiQueue) req.Flags |= Native.IFF_MULTI_QUEUE;
        for (var i = 0; i < bytes.Length; i++) req.Name[i] = bytes[i];
        if (Native.ioctl(fd, Native.TUNSETIFF, &req) < 0) Fail(fd, $"TUNSETIFF {name}");
        if (!offloads) return new Tun(fd, name, false);
        // USO needs both families offered at once; a kernel without it (before 6.2) refuses the pair, then TCP
        // alone. The segmenter cuts whatever the kernel hands over, so which of the two took needs no remembering.
        const uint tcp = Native.TUN_F_CSUM | Native.TUN_F_TSO4 | Native.TUN_F_TSO_ECN;
        uint withUdp = tcp | Native.TUN_F_USO4 | Native.TUN_F_USO6, tcpOnly = tcp;
        if (Native.ioctl(fd, Native.TUNSETOFFLOAD, (void*)withUdp) < 0
            && Native.ioctl(fd, Native.TUNSETOFFLOAD, (void*)tcpOnly) < 0) Fail(fd, $"TUNSETOFFLOAD {name}");
        return new Tun(fd, name, true);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    static void Fail(int fd, string what)
    {
        var e = Native.Errno;
        Native.close(fd);
        Native.Throw(what, e);
    }

    /// <summary>
    /// Writes one whole packet (checksums complete, nothing to segment); false when the kernel refused it.
    /// </summary>
    public bool Write(byte* packet, int length) => Write(VirtioNetHeader.Plain, packet, length);

    /// <summary>Writes a packet after <paramref name="header"/> (left out when the TUN has no such headers).</summary>
    public bool Write(VirtioNetHeader header, byte* packet, int length)
    {
        if (!VnetHeader) return Native.write(Fd, packet, (nuint)length) >= 0;
        var h = stackalloc byte[VirtioNetHeader.Size];
        header.Write(new Span<byte>(h, VirtioNetHeader.Size));
        var iov = stackalloc Native.IoVec[2];
        iov[0] = new Native.IoVec { Base = h, Len = VirtioNetHeader.Size };
        iov[1] = new Native.IoVec { Base = packet, Len = (nuint)length };
        return Native.writev(Fd, iov, 2) >= 0;
    }

    public void Dispose()
    {
        if (Fd >= 0)
        {
            Native.close(Fd);
            Fd = -1;
        }
    }
}
