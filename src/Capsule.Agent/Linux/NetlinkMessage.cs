using System.Buffers.Binary;
using System.Net;
using System.Text;

namespace Capsule.Agent.Linux;

/// <summary>
/// One rtnetlink request being written: the 16-byte netlink header, a fixed family header
/// (ifinfomsg, ifaddrmsg, rtmsg) and attributes, nested ones included. Lengths and 4-byte alignment
/// are filled in as the message grows, so callers only say what goes in. Host byte order throughout
/// (netlink's own), except addresses, which are in network order.
/// </summary>
internal sealed class NetlinkMessage
{
    public const ushort NLM_F_REQUEST = 1, NLM_F_ACK = 4, NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200,
        NLM_F_CREATE = 0x400, NLM_F_DUMP = 0x300;

    byte[] _buf = new byte[256];
    int _len;

    public NetlinkMessage(ushort type, ushort flags)
    {
        _len = 16;
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(4), type);
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(6), (ushort)(flags | NLM_F_REQUEST));
    }

    public ReadOnlySpan<byte> Bytes => _buf.AsSpan(0, _len);

    public uint Seq
    {
        set => BinaryPrimitives.WriteUInt32LittleEndian(_buf.AsSpan(8), value);
    }

    /// <summary>ifinfomsg: which link (index, or 0 to name it by IFLA_IFNAME) and the flags to change.</summary>
    public NetlinkMessage IfInfo(int index = 0, uint flags = 0, uint change = 0)
    {
        var s = Grow(16);
        s[0] = 0; // AF_UNSPEC
        BinaryPrimitives.WriteInt32LittleEndian(s[4..], index);
        BinaryPrimitives.WriteUInt32LittleEndian(s[8..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(s[12..], change);
        return this;
    }

    /// <summary>nfgenmsg (nfnetlink's header): the protocol family, version 0, resource 0.</summary>
    public NetlinkMessage NfGen(byte family)
    {
        Grow(4)[0] = family;
        return this;
    }

    /// <summary>ifaddrmsg for an IPv4 address on link <paramref name="index"/>.</summary>
    public NetlinkMessage IfAddr(int index, byte prefixLength)
    {
        var s = Grow(8);
        s[0] = (byte)Native.AF_INET;
        s[1] = prefixLength;
        BinaryPrimitives.WriteInt32LittleEndian(s[4..], index);
        return this;
    }

    /// <summary>rtmsg for an IPv4 route.</summary>
    public NetlinkMessage Rt(byte dstLength, byte table, byte protocol, byte scope, byte type)
    {
        var s = Grow(12);
        s[0] = (byte)Native.AF_INET;
        s[1] = dstLength;
        s[4] = table;
        s[5] = protocol;
        s[6] = scope;
        s[7] = type;
        return this;
    }

    public NetlinkMessage U32(ushort attr, uint value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(Attr(attr, 4), value);
        return this;
    }

    /// <summary>A 32-bit attribute in network order, as nfnetlink wants its numbers.</summary>
    public NetlinkMessage U32BE(ushort attr, uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(Attr(attr, 4), value);
        return this;
    }

    public NetlinkMessage Str(ushort attr, string value)
    {
        var s = Attr(attr, Encoding.ASCII.GetByteCount(value) + 1);
        Encoding.ASCII.GetBytes(value, s);
        return this;
    }

    public NetlinkMessage Ipv4(ushort attr, IPAddress address)
    {
        if (!address.TryWriteBytes(Attr(attr, 4), out _))
            throw new ArgumentException($"{address} is not an IPv4 address");
        return this;
    }

    /// <summary>A nested attribute: what <paramref name="body"/> adds goes inside it.</summary>
    public NetlinkMessage Nest(ushort attr, Action<NetlinkMessage> body)
    {
        var start = _len;
        Grow(4);
        body(this);
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(start), (ushort)(_len - start));
        BinaryPrimitives.WriteUInt16LittleEndian(_buf.AsSpan(start + 2), attr);
        return this;
    }

    Span<byte> Attr(ushort attr, int payload)
    {
        var start = _len;
        var s = Grow(4 + payload);
        BinaryPrimitives.WriteUInt16LittleEndian(s, (ushort)(4 + payload));
        BinaryPrimitives.WriteUInt16LittleEndian(s[2..], attr);
        return _buf.AsSpan(start + 4, payload);
    }

    /// <summary>Room for <paramref name="n"/> more bytes (zeroed), padded to 4; the header's length kept.</summary>
    Span<byte> Grow(int n)
    {
        var padded = (n + 3) & ~3;
        if (_len + padded > _buf.Length) Array.Resize(ref _buf, Math.Max(_buf.Length * 2, _len + padded));
        var s = _buf.AsSpan(_len, padded);
        s.Clear();
        _len += padded;
        BinaryPrimitives.WriteUInt32LittleEndian(_buf, (uint)_len);
        return s[..n];
    }
}
