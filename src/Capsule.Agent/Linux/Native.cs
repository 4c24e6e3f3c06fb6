using System.Runtime.InteropServices;

namespace Capsule.Agent.Linux;

/// <summary>
/// The libc calls the data plane needs that .NET does not expose: TUN set-up, batched UDP
/// (recvmmsg/sendmmsg) and poll. Everything else goes through the BCL.
/// </summary>
public static unsafe partial class Native
{
    const string Libc = "libc";

    public const int O_RDWR = 2, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000;
    public const int O_RDONLY = 0, O_DIRECTORY = 0x10000;
    public const int EAGAIN = 11, EINTR = 4;
    public const short POLLIN = 1;
    public const int SOCK_RAW = 3, IPPROTO_RAW = 255;
    public const int AF_INET = 2, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0x800, SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1, SO_REUSEADDR = 2, SO_SNDBUF = 7, SO_RCVBUF = 8, SO_SNDBUFFORCE = 32,
        SO_RCVBUFFORCE = 33, SO_REUSEPORT = 15;
    /// <summary>A classic BPF program that picks the socket of a SO_REUSEPORT group (asm-generic/socket.h).</summary>
    public const int SO_ATTACH_REUSEPORT_CBPF = 51;
    public const int IPPROTO_IP = 0, IP_MTU_DISCOVER = 10, IP_PMTUDISC_DONT = 0;
    public const int MSG_DONTWAIT = 0x40;
    public const uint TUNSETIFF = 0x400454ca;
    public const short IFF_TUN = 0x0001, IFF_NO_PI = 0x1000, IFF_VNET_HDR = 0x4000, IFF_MULTI_QUEUE = 0x0100;
    /// <summary>_IOW('T', 208, unsigned int): the offloads the TUN's reader handles (linux/if_tun.h).</summary>
    public const uint TUNSETOFFLOAD = 0x400454d0;
    public const uint TUN_F_CSUM = 0x01, TUN_F_TSO4 = 0x02, TUN_F_TSO6 = 0x04, TUN_F_TSO_ECN = 0x08,
        TUN_F_USO4 = 0x20, TUN_F_USO6 = 0x40;
    /// <summary>UDP segmentation on send (a gso_size cmsg) and coalescing on receive (linux/udp.h).</summary>
    public const int SOL_UDP = 17, UDP_SEGMENT = 103, UDP_GRO = 104;
    public const int EFD_NONBLOCK = 0x800, EFD_CLOEXEC = 0x80000;

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd { public int Fd; public short Events; public short REvents; }

    [StructLayout(LayoutKind.Sequential)]
    public struct SockAddrIn
    {
        public ushort Family;
        public ushort PortBE;   // network order
        public uint AddrBE;     // network order
        public ulong Zero;
    }

    /// <summary>struct sock_filter: one classic BPF instruction (linux/filter.h).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct SockFilter { public ushort Code; public byte Jt; public byte Jf; public uint K; }

    /// <summary>struct sock_fprog.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct SockFprog { public ushort Len; public SockFilter* Filter; }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec { public void* Base; public nuint Len; }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name; public uint NameLen;
        public IoVec* Iov; public nuint IovLen;
        public void* Control; public nuint ControlLen;
        public int Flags;
    }

    /// <summary>struct cmsghdr; its data starts at <see cref="DataOffset"/>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct CMsgHdr
    {
        public nuint Len; public int Level; public int Type;
        public const int DataOffset = 16;
        /// <summary>CMSG_SPACE of a 4-byte value: the header and the value, padded to 8.</summary>
        public const int Space4 = 24;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MMsgHdr { public MsgHdr Hdr; public uint Len; }

    [StructLayout(LayoutKind.Sequential)]
    public struct IfReq
    {
        public fixed byte Name[16];
        public short Flags;
        fixed byte _pad[22];
    }

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkfifo(string path, uint mode);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mknod(string path, uint mode, ulong dev);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lchown(string path, uint owner, uint group);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chmod(string path, uint mode);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint lgetxattr(string path, string name, byte* value, nuint size);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lsetxattr(string path, string name, byte* value, nuint size, int flags);

    public const int AtFdCwd = -100;
    public const int AtSymlinkNoFollow = 0x100;
    public const uint StatxBasicStats = 0x7ff;

    /// <summary>struct statx (linux/stat.h): the same layout on every architecture, unlike struct stat.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    public struct Statx
    {
        [FieldOffset(20)] public uint Uid;
        [FieldOffset(24)] public uint Gid;
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(40)] public ulong Size;
        [FieldOffset(96)] public long CtimeSec;
        [FieldOffset(104)] public uint CtimeNsec;
        [FieldOffset(112)] public long MtimeSec;
        [FieldOffset(120)] public uint MtimeNsec;
    }

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statx(int dirFd, string path, int flags, uint mask, Statx* buf);

    /// <summary>
    /// True for a Unix socket's file: a capsule's bound socket, which CRIU binds again at its restore, and which
    /// no archive can hold (TarWriter refuses it).
    /// </summary>
    public static unsafe bool IsSocketFile(string path)
    {
        Statx st;
        const int typeMask = 0xF000;
        const int socket = 0xC000;
        return statx(AtFdCwd, path, AtSymlinkNoFollow, StatxBasicStats, &st) == 0 && (st.Mode & typeMask) == socket;
    }

    [LibraryImport(Libc, SetLastError = true)]
    public static partial nint read(int fd, void* buf, nuint count);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial nint write(int fd, void* buf, nuint count);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial nint writev(int fd, IoVec* iov, int count);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint nfds, int timeoutMs);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int bind(int fd, SockAddrIn* addr, uint len);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int setsockopt(int fd, int level, int name, void* val, uint len);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int recvmmsg(int fd, MMsgHdr* msgs, uint vlen, int flags, void* timeout);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int sendmmsg(int fd, MMsgHdr* msgs, uint vlen, int flags);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial nint sendto(int fd, void* buf, nuint len, int flags, SockAddrIn* addr, uint addrLen);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int kill(int pid, int sig);

    public const int F_SETFD = 2;
    public const int FD_CLOEXEC = 1;
    public const int AF_UNIX = 1, SOCK_STREAM = 1;

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int socketpair(int domain, int type, int protocol, int* sv);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno) + $" (errno {errno})";

    public static void ThrowIfFailed(int rc, string what)
    {
        if (rc < 0) Throw(what, Errno);
    }

    // Kept out of line so callers stay small enough to inline.
    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    public static void Throw(string what, int errno) => throw new IOException($"{what}: {Describe(errno)}");
}

public static partial class Native
{
    [LibraryImport(Libc)]
    public static partial uint geteuid();
}

public static partial class Native
{
    public const uint CLOSE_RANGE_CLOEXEC = 4;

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int close_range(uint first, uint last, uint flags);

    /// <summary>
    /// Marks every inherited descriptor above stderr close-on-exec. An agent inherits whatever its
    /// starter left open; a capsule must not, or CRIU finds host files in it that it cannot move.
    /// </summary>
    public static void CloseInheritedOnExec() => close_range(3, uint.MaxValue, CLOSE_RANGE_CLOEXEC);
}
