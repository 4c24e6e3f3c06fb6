using System.Buffers.Binary;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// A NETLINK_ROUTE socket: one request at a time, each answered before the next goes. The socket
/// belongs to the network namespace of the thread that opened it, for its whole life, so a socket
/// opened once inside a capsule's namespace configures that namespace from any thread.
/// </summary>
internal sealed unsafe class Netlink : IDisposable
{
    const ushort NLMSG_ERROR = 2, NLMSG_DONE = 3;
    const ushort RTM_NEWLINK = 16, RTM_GETLINK = 18;
    const ushort IFLA_IFNAME = 3;

    readonly int _fd;
    readonly string _where;
    uint _seq;

    Netlink(int fd, string where)
    {
        _fd = fd;
        _where = where;
    }

    /// <summary>A socket in the calling thread's network namespace; <paramref name="where"/> is for errors.</summary>
    public static Netlink Open(string where, int protocol = Native.NETLINK_ROUTE)
    {
        var fd = Native.socket(Native.AF_NETLINK, Native.SOCK_RAW | Native.SOCK_CLOEXEC, protocol);
        if (fd < 0) throw Native.Failed($"netlink socket ({where})", Native.Errno);
        return new Netlink(fd, where);
    }

    /// <summary>
    /// Sends a request and waits for the kernel's answer; a refusal becomes an error that says what was asked.
    /// Returns the errno the kernel answered with when it is one of <paramref name="tolerated"/> (0 on success).
    /// </summary>
    public int Request(NetlinkMessage m, string what, params int[] tolerated)
    {
        var errno = Exchange(m, NetlinkMessage.NLM_F_ACK, null);
        if (errno == 0 || tolerated.Contains(errno)) return errno;
        throw Failed(what, errno);
    }

    /// <summary>The index of link <paramref name="name"/> in this socket's namespace.</summary>
    public int IndexOf(string name)
    {
        var index = 0;
        var m = new NetlinkMessage(RTM_GETLINK, 0).IfInfo().Str(IFLA_IFNAME, name);
        var errno = Exchange(m, 0, (type, msg) =>
        {
            if (type != RTM_NEWLINK) return false;
            index = BinaryPrimitives.ReadInt32LittleEndian(msg[20..]);
            return true;
        });
        if (errno != 0) throw Failed($"find link {name}", errno);
        return index;
    }

    /// <summary>
    /// A dump: each message of the answer (header included) goes to <paramref name="each"/>. Returns the
    /// errno when it is one of <paramref name="tolerated"/> (0 on success).
    /// </summary>
    public int Dump(NetlinkMessage m, string what, MessageVisitor each, params int[] tolerated)
    {
        var errno = Exchange(m, NetlinkMessage.NLM_F_DUMP, (type, msg) =>
        {
            each(type, msg);
            return false;
        });
        if (errno == 0 || tolerated.Contains(errno)) return errno;
        throw Failed(what, errno);
    }

    public delegate void MessageVisitor(ushort type, ReadOnlySpan<byte> message);
    public delegate void AttrVisitor(ushort type, ReadOnlySpan<byte> payload);
    delegate bool Handler(ushort type, ReadOnlySpan<byte> message);

    /// <summary>Each attribute in <paramref name="attrs"/> (4-byte aligned); nested ones are not opened.</summary>
    public static void Attrs(ReadOnlySpan<byte> attrs, AttrVisitor each)
    {
        while (attrs.Length >= 4)
        {
            var len = BinaryPrimitives.ReadUInt16LittleEndian(attrs);
            if (len < 4 || len > attrs.Length) return;
            // The top bits flag nesting and byte order; the type is the rest.
            each((ushort)(BinaryPrimitives.ReadUInt16LittleEndian(attrs[2..]) & 0x3fff), attrs[4..len]);
            attrs = attrs[Math.Min(attrs.Length, (len + 3) & ~3)..];
        }
    }

    CommandFailedException Failed(string what, int errno) =>
        new($"{what} ({_where}) failed: {Native.Describe(errno)}");

    /// <summary>
    /// One round trip. It ends with an error message (its errno; 0 is an acknowledgement), the end of a
    /// dump, or when <paramref name="handle"/> says the message it was given was the answer.
    /// </summary>
    int Exchange(NetlinkMessage m, ushort extraFlags, Handler? handle)
    {
        var seq = ++_seq;
        m.Seq = seq;
        var bytes = m.Bytes.ToArray();
        var flags = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(6));
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(6), (ushort)(flags | extraFlags));
        fixed (byte* p = bytes)
        {
            if (Native.send(_fd, p, (nuint)bytes.Length, 0) < 0)
                throw Failed("netlink send", Native.Errno);
        }
        var buf = new byte[32768];
        while (true)
        {
            nint n;
            fixed (byte* p = buf) n = Native.recv(_fd, p, (nuint)buf.Length, 0);
            if (n < 0)
            {
                if (Native.Errno == Native.EINTR) continue;
                throw Failed("netlink receive", Native.Errno);
            }
            for (var off = 0; off + 16 <= n;)
            {
                var h = buf.AsSpan(off, (int)n - off);
                var len = (int)BinaryPrimitives.ReadUInt32LittleEndian(h);
                var type = BinaryPrimitives.ReadUInt16LittleEndian(h[4..]);
                var rseq = BinaryPrimitives.ReadUInt32LittleEndian(h[8..]);
                if (len < 16 || len > h.Length) throw Failed("netlink receive (malformed answer)", Native.EINVAL);
                // Answers to an earlier request that gave up are skipped: only ours counts.
                if (rseq == seq)
                {
                    if (type == NLMSG_ERROR) return -BinaryPrimitives.ReadInt32LittleEndian(h[16..]);
                    if (type == NLMSG_DONE) return 0;
                    if (handle is not null && handle(type, h[..len])) return 0;
                }
                off += (len + 3) & ~3;
            }
        }
    }

    public void Dispose() => Native.close(_fd);
}
