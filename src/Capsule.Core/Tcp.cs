using System.Buffers.Binary;
using Capsule.Core.Offload;

namespace Capsule.Core;

/// <summary>The fields of a TCP segment the gateway's pause needs, read from an IPv4 packet.</summary>
public readonly record struct TcpSegment(
    Locator Src, ushort SrcPort, Locator Dst, ushort DstPort,
    uint Seq, uint Ack, byte Flags, ushort Window, int PayloadLength,
    bool HasTimestamps, uint TsVal, uint TsEcr, int WindowScale)
{
    public bool Syn => (Flags & Tcp.SYN) != 0;
    public bool Fin => (Flags & Tcp.FIN) != 0;
    public bool Rst => (Flags & Tcp.RST) != 0;
    public bool HasAck => (Flags & Tcp.ACK) != 0;
    /// <summary>Sequence space the segment takes: its payload, and one each for SYN and FIN.</summary>
    public uint SeqLength => (uint)PayloadLength + (Syn ? 1u : 0) + (Fin ? 1u : 0);
}

/// <summary>
/// Just enough TCP for the gateway to speak for a paused capsule (seed Fig. 9: "the transmit window
/// … is set to zero"): read a segment, write a bare ACK with a given window, and change the window
/// of a segment in passing with an incremental checksum update (RFC 1624).
/// </summary>
public static class Tcp
{
    public const byte FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10;
    public const int Protocol = 6;
    /// <summary>A bare ACK with the timestamp option: IPv4 20 + TCP 20 + 12.</summary>
    public const int MaxAck = 20 + 20 + 12;

    public static bool TryParse(ReadOnlySpan<byte> p, out TcpSegment seg)
    {
        seg = default;
        if (!Ipv4.IsValid(p) || Ipv4.Protocol(p) != Protocol) return false;
        if ((BinaryPrimitives.ReadUInt16BigEndian(p[6..]) & 0x3FFF) != 0) return false; // a fragment
        var ihl = (p[0] & 0xF) * 4;
        var t = p[ihl..];
        if (t.Length < 20) return false;
        var off = (t[12] >> 4) * 4;
        if (off < 20 || off > t.Length) return false;
        bool ts = false;
        uint tsVal = 0, tsEcr = 0;
        var wscale = -1;
        var o = t[20..off];
        while (!o.IsEmpty)
        {
            var kind = o[0];
            if (kind == 0) break;
            if (kind == 1)
            {
                o = o[1..];
                continue;
            }
            if (o.Length < 2 || o[1] < 2 || o[1] > o.Length) break;
            if (kind == 3 && o[1] == 3) wscale = Math.Min((int)o[2], 14);
            if (kind == 8 && o[1] == 10)
            {
                ts = true;
                tsVal = BinaryPrimitives.ReadUInt32BigEndian(o[2..]);
                tsEcr = BinaryPrimitives.ReadUInt32BigEndian(o[6..]);
            }
            o = o[o[1]..];
        }
        seg = new TcpSegment(Ipv4.Source(p), BinaryPrimitives.ReadUInt16BigEndian(t), Ipv4.Destination(p),
            BinaryPrimitives.ReadUInt16BigEndian(t[2..]), BinaryPrimitives.ReadUInt32BigEndian(t[4..]),
            BinaryPrimitives.ReadUInt32BigEndian(t[8..]), t[13], BinaryPrimitives.ReadUInt16BigEndian(t[14..]),
            t.Length - off, ts, tsVal, tsEcr, wscale);
        return true;
    }

    /// <summary>
    /// Writes a bare ACK (with timestamps when <paramref name="timestamps"/>) into <paramref name="dst"/>; returns its
    /// length.
    /// </summary>
    public static int WriteAck(Span<byte> dst, Locator src, ushort srcPort, Locator to, ushort toPort, uint seq,
        uint ack, ushort window, bool timestamps, uint tsVal, uint tsEcr)
    {
        var tcpLen = timestamps ? 32 : 20;
        var total = 20 + tcpLen;
        var p = dst[..total];
        p.Clear();
        p[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(p[2..], (ushort)total);
        BinaryPrimitives.WriteUInt16BigEndian(p[6..], 0x4000); // DF
        p[8] = 64;
        p[9] = Protocol;
        src.Write(p[12..]);
        to.Write(p[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(p[10..], Icmp.Checksum(p[..20]));
        var t = p[20..];
        BinaryPrimitives.WriteUInt16BigEndian(t, srcPort);
        BinaryPrimitives.WriteUInt16BigEndian(t[2..], toPort);
        BinaryPrimitives.WriteUInt32BigEndian(t[4..], seq);
        BinaryPrimitives.WriteUInt32BigEndian(t[8..], ack);
        t[12] = (byte)((tcpLen / 4) << 4);
        t[13] = ACK;
        BinaryPrimitives.WriteUInt16BigEndian(t[14..], window);
        if (timestamps)
        {
            t[20] = 1;
            t[21] = 1;
            t[22] = 8;
            t[23] = 10;
            BinaryPrimitives.WriteUInt32BigEndian(t[24..], tsVal);
            BinaryPrimitives.WriteUInt32BigEndian(t[28..], tsEcr);
        }
        BinaryPrimitives.WriteUInt16BigEndian(t[16..], Checksum(src, to, t));
        return total;
    }

    /// <summary>
    /// Sets the window of the TCP segment in <paramref name="p"/> (IPv4), updating its checksum incrementally.
    /// </summary>
    public static void SetWindow(Span<byte> p, ushort window)
    {
        var t = p[((p[0] & 0xF) * 4)..];
        var old = BinaryPrimitives.ReadUInt16BigEndian(t[14..]);
        if (old == window) return;
        BinaryPrimitives.WriteUInt16BigEndian(t[14..], window);
        // RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')
        uint sum = (ushort)~BinaryPrimitives.ReadUInt16BigEndian(t[16..]);
        sum += (ushort)~old;
        sum += window;
        while (sum >> 16 != 0) sum = (sum & 0xFFFF) + (sum >> 16);
        BinaryPrimitives.WriteUInt16BigEndian(t[16..], (ushort)~sum);
    }

    /// <summary>
    /// The TCP checksum over the IPv4 pseudo-header and <paramref name="segment"/> (a whole TCP header at least; its
    /// checksum field read as zero).
    /// </summary>
    public static ushort Checksum(Locator src, Locator dst, ReadOnlySpan<byte> segment)
    {
        ulong pseudo = (src.Value >> 16) + (src.Value & 0xFFFF) + (dst.Value >> 16) + (dst.Value & 0xFFFF) + Protocol
            + (uint)segment.Length;
        return InetChecksum.Finish(InetChecksum.Add(segment[18..], InetChecksum.Add(segment[..16], pseudo)));
    }
}
