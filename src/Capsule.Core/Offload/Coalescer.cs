using System.Buffers.Binary;

namespace Capsule.Core.Offload;

/// <summary>What the coalescer hands on: a packet, after the header to write before it on the TUN.</summary>
public delegate void CoalescedPacket(VirtioNetHeader header, ReadOnlySpan<byte> packet);

/// <summary>
/// Receive-side coalescing (the kernel's GRO, done for the TUN): consecutive TCP segments of one flow that arrived
/// in one batch become one super-packet written with one <see cref="VirtioNetHeader"/>, which the kernel's stack
/// then takes as one, instead of each segment on its own. A segment joins a flow's packet only when the result
/// cut again (<see cref="Segmenter"/>) gives back exactly the segments that came: the same headers but for the
/// sequence number (the next expected), the IP id (the next), lengths and checksums; every segment but the last
/// full-sized (the first's payload length); no flags but ACK, PSH only on the last; no IP options or fragments.
/// Anything else passes on as it came, after what is pending of its flow, so no flow is ever reordered.
/// Holds <see cref="Slots"/> packets under construction at once, in buffers it owns: no allocation per packet.
/// </summary>
public sealed class Coalescer
{
    const int MaxPacket = 65535;
    const int MaxSegments = 64;

    /// <summary>Flows coalesced at once; a new flow past them sends the oldest on.</summary>
    public int Slots { get; }

    readonly Item[] _items;
    long _started;

    public Coalescer(int slots = 8)
    {
        Slots = slots;
        _items = new Item[slots];
        for (var i = 0; i < slots; i++) _items[i] = new Item();
    }

    sealed class Item
    {
        public readonly byte[] Buffer = new byte[MaxPacket];
        public int Length, Segments, GsoSize, HeaderLength;
        public uint NextSeq;
        public ushort NextId;
        public bool Closed;
        public long Started;
        public bool InUse => Segments > 0;
    }

    /// <summary>Takes the next packet of a batch; hands on whatever it cannot hold any longer.</summary>
    public void Add(ReadOnlySpan<byte> packet, CoalescedPacket emit)
    {
        if (!Eligible(packet, out var hdrLen))
        {
            // A packet of a pending flow that cannot join: that flow's pending packet goes first.
            if (FindFlow(packet) is { } pending) Send(pending, emit);
            emit(VirtioNetHeader.Plain, packet);
            return;
        }
        if (FindFlow(packet) is { } item)
        {
            if (TryJoin(item, packet, hdrLen)) return;
            Send(item, emit);
        }
        Start(FreeSlot(emit), packet, hdrLen);
    }

    /// <summary>The end of a batch: every pending packet handed on, oldest first.</summary>
    public void Flush(CoalescedPacket emit)
    {
        while (true)
        {
            Item? oldest = null;
            foreach (var i in _items)
                if (i.InUse && (oldest is null || i.Started < oldest.Started)) oldest = i;
            if (oldest is null) return;
            Send(oldest, emit);
        }
    }

    /// <summary>An IPv4 TCP segment with data, no IP options, unfragmented, flags ACK or ACK|PSH only.</summary>
    static bool Eligible(ReadOnlySpan<byte> p, out int hdrLen)
    {
        hdrLen = 0;
        if (p.Length < 40 || p.Length > MaxPacket || p[0] != 0x45 || p[9] != Tcp.Protocol) return false;
        if (BinaryPrimitives.ReadUInt16BigEndian(p[2..]) != p.Length) return false;
        if ((BinaryPrimitives.ReadUInt16BigEndian(p[6..]) & 0x3FFF) != 0) return false;
        hdrLen = 20 + (p[32] >> 4) * 4;
        if (hdrLen < 40 || hdrLen >= p.Length) return false;
        return (p[33] & ~Tcp.PSH) == Tcp.ACK;
    }

    Item? FindFlow(ReadOnlySpan<byte> p)
    {
        if (p.Length < 24 || p[0] >> 4 != 4 || p[9] != Tcp.Protocol) return null;
        var ihl = (p[0] & 0xF) * 4;
        if (p.Length < ihl + 4) return null;
        foreach (var i in _items)
            if (i.InUse && SameFlow(i.Buffer, p, ihl)) return i;
        return null;
    }

    // Addresses (12..20) and ports (the first 4 bytes of the TCP header).
    static bool SameFlow(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, int ihl) =>
        a.Slice(12, 8).SequenceEqual(b.Slice(12, 8)) && a.Slice(20, 4).SequenceEqual(b.Slice(ihl, 4))
        && (a[0] & 0xF) * 4 == ihl;

    bool TryJoin(Item item, ReadOnlySpan<byte> p, int hdrLen)
    {
        var payload = p.Length - hdrLen;
        if (item.Closed || item.Segments >= MaxSegments || hdrLen != item.HeaderLength
            || payload > item.GsoSize || item.Length + payload > MaxPacket) return false;
        if (BinaryPrimitives.ReadUInt32BigEndian(p[24..]) != item.NextSeq
            || BinaryPrimitives.ReadUInt16BigEndian(p[4..]) != item.NextId) return false;
        var h = item.Buffer.AsSpan();
        // Every header byte the segmenter copies from the first segment must be this one's too: version to
        // protocol but the length and id (0..2, 6..10), addresses, ports, ack, window, urgent pointer, options.
        if (!p[..2].SequenceEqual(h[..2]) || !p[6..10].SequenceEqual(h[6..10]) || !p[12..24].SequenceEqual(h[12..24])
            || !p[28..33].SequenceEqual(h[28..33]) || !p[34..36].SequenceEqual(h[34..36])
            || !p[38..hdrLen].SequenceEqual(h[38..hdrLen])) return false;
        if ((h[33] & Tcp.PSH) != 0) return false; // PSH closes a packet: it is only ever on the last segment
        p[hdrLen..].CopyTo(h[item.Length..]);
        item.Length += payload;
        item.Segments++;
        item.NextSeq += (uint)payload;
        item.NextId++;
        h[33] = p[33];
        // A short segment is the last that may join: the segmenter cuts at GsoSize.
        if (payload < item.GsoSize || (p[33] & Tcp.PSH) != 0) item.Closed = true;
        return true;
    }

    Item FreeSlot(CoalescedPacket emit)
    {
        Item? oldest = null;
        foreach (var i in _items)
        {
            if (!i.InUse) return i;
            if (oldest is null || i.Started < oldest.Started) oldest = i;
        }
        Send(oldest!, emit);
        return oldest!;
    }

    void Start(Item item, ReadOnlySpan<byte> p, int hdrLen)
    {
        p.CopyTo(item.Buffer);
        item.Length = p.Length;
        item.Segments = 1;
        item.HeaderLength = hdrLen;
        item.GsoSize = p.Length - hdrLen;
        item.NextSeq = BinaryPrimitives.ReadUInt32BigEndian(p[24..]) + (uint)item.GsoSize;
        item.NextId = (ushort)(BinaryPrimitives.ReadUInt16BigEndian(p[4..]) + 1);
        item.Closed = (p[33] & Tcp.PSH) != 0;
        item.Started = _started++;
    }

    /// <summary>
    /// Hands on an item: one segment as it came; several as one packet whose TCP checksum holds the pseudo-header's
    /// sum, for the kernel to complete (NEEDS_CSUM), and whose IPv4 header is whole.
    /// </summary>
    static void Send(Item item, CoalescedPacket emit)
    {
        var p = item.Buffer.AsSpan(0, item.Length);
        if (item.Segments == 1)
        {
            emit(VirtioNetHeader.Plain, p);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(p[2..], (ushort)p.Length);
            InetChecksum.SetIpv4(p);
            var pseudo = InetChecksum.Fold(InetChecksum.PseudoHeader(p, Tcp.Protocol, p.Length - 20));
            BinaryPrimitives.WriteUInt16BigEndian(p[36..], pseudo);
            emit(new VirtioNetHeader(VirtioNetHeader.NeedsCsum, VirtioNetHeader.GsoTcpV4, (ushort)item.HeaderLength,
                (ushort)item.GsoSize, 20, 16), p);
        }
        item.Segments = 0;
    }
}
