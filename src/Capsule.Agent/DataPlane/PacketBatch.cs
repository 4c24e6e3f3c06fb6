using System.Runtime.InteropServices;
using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// A fixed set of packet slots with their mmsghdr, iovec, address and control arrays, allocated once in
/// native memory so the kernel can read and write them with no pinning and no per-packet allocation. Each
/// slot keeps <see cref="Wire.HeaderSize"/> bytes of headroom so wrapping a packet is a header write in place,
/// not a copy.
///
/// Sending, a message is a run of datagrams for one host (<see cref="Append"/>): iovec k holds datagram k, and
/// a message of several carries a UDP_SEGMENT control message, so the kernel takes them as one UDP "super
/// datagram" it cuts only at the last moment (UDP GSO), or never, when the receiving socket asked for UDP_GRO.
/// Receiving, each slot takes one message, which with UDP_GRO may be many datagrams of one size back to back.
/// </summary>
internal sealed unsafe class PacketBatch : IDisposable
{
    public const int SlotSize = 2048; // >= underlay MTU (1500) + headroom; TUN MTU is below it
    /// <summary>The longest packet a slot takes: room for the header before it and the AEAD tag after it.</summary>
    public const int MaxPacket = SlotSize - Wire.HeaderSize - Wire.TagSize;
    /// <summary>A receive slot for one coalesced message: the longest UDP payload there is.</summary>
    public const int GroSlotSize = 65536;
    /// <summary>The kernel's bounds on one UDP GSO send: one IPv4 UDP packet's payload, and UDP_MAX_SEGMENTS.</summary>
    const int MaxGsoBytes = 65535 - 20 - 8, MaxGsoSegments = 64;

    public readonly int Capacity;
    public readonly int SlotBytes;
    public readonly byte* Slots;
    public readonly Native.MMsgHdr* Msgs;
    public readonly Native.IoVec* Iovs;
    public readonly Native.SockAddrIn* Addrs;
    readonly byte* _controls;
    readonly int* _segment;
    readonly bool* _closed;

    /// <summary>Whether <see cref="Append"/> joins datagrams into UDP GSO messages (else one message each).</summary>
    public bool UdpSegmentation { get; init; }

    /// <summary>Messages appended since the last <see cref="Clear"/>.</summary>
    public int Messages { get; private set; }

    public PacketBatch(int capacity, int slotBytes = SlotSize)
    {
        Capacity = capacity;
        SlotBytes = slotBytes;
        Slots = (byte*)NativeMemory.AlignedAlloc((nuint)((long)capacity * slotBytes), 64);
        Msgs = (Native.MMsgHdr*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(Native.MMsgHdr)));
        Iovs = (Native.IoVec*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(Native.IoVec)));
        Addrs = (Native.SockAddrIn*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(Native.SockAddrIn)));
        _controls = (byte*)NativeMemory.AllocZeroed((nuint)(capacity * Native.CMsgHdr.Space4));
        _segment = (int*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(int)));
        _closed = (bool*)NativeMemory.AllocZeroed((nuint)capacity);
        for (var i = 0; i < capacity; i++)
        {
            Iovs[i].Base = Slot(i);
            Iovs[i].Len = (nuint)slotBytes;
            Msgs[i].Hdr.Iov = &Iovs[i];
            Msgs[i].Hdr.IovLen = 1;
            Msgs[i].Hdr.Name = &Addrs[i];
            Msgs[i].Hdr.NameLen = (uint)sizeof(Native.SockAddrIn);
        }
    }

    public byte* Slot(int i) => Slots + (nint)i * SlotBytes;

    /// <summary>Forgets the messages appended: the next <see cref="Append"/> starts message 0.</summary>
    public void Clear() => Messages = 0;

    /// <summary>
    /// Adds the datagram at <paramref name="data"/> as iovec <paramref name="iov"/> (each call a higher one than
    /// the last since <see cref="Clear"/>). It joins the last message when that goes to the same address, ends
    /// at the iovec before, and its datagrams are this one's length (a shorter one joins and ends the run, as
    /// UDP GSO cuts every segment to the first's size but the last); otherwise it starts a message.
    /// </summary>
    public void Append(int iov, byte* data, int length, in Native.SockAddrIn to)
    {
        Iovs[iov].Base = data;
        Iovs[iov].Len = (nuint)length;
        if (UdpSegmentation && Messages > 0 && TryJoin(Messages - 1, iov, length, to)) return;
        var m = Messages++;
        Addrs[m] = to;
        ref var h = ref Msgs[m].Hdr;
        h.Iov = &Iovs[iov];
        h.IovLen = 1;
        h.Control = null;
        h.ControlLen = 0;
        _segment[m] = length;
        _closed[m] = false;
    }

    bool TryJoin(int m, int iov, int length, in Native.SockAddrIn to)
    {
        ref var h = ref Msgs[m].Hdr;
        var count = (int)h.IovLen;
        if (_closed[m] || h.Iov + count != &Iovs[iov] || length > _segment[m] || count >= MaxGsoSegments
            || (long)_segment[m] * count + length > MaxGsoBytes
            || Addrs[m].AddrBE != to.AddrBE || Addrs[m].PortBE != to.PortBE) return false;
        h.IovLen = (nuint)(count + 1);
        if (length < _segment[m]) _closed[m] = true;
        if (count == 1)
        {
            var c = (Native.CMsgHdr*)(_controls + m * Native.CMsgHdr.Space4);
            *c = new Native.CMsgHdr { Len = Native.CMsgHdr.DataOffset + 2, Level = Native.SOL_UDP,
                Type = Native.UDP_SEGMENT };
            *(ushort*)((byte*)c + Native.CMsgHdr.DataOffset) = (ushort)_segment[m];
            h.Control = c;
            h.ControlLen = Native.CMsgHdr.Space4;
        }
        return true;
    }

    /// <summary>Datagrams in message <paramref name="m"/>.</summary>
    public int Datagrams(int m) => (int)Msgs[m].Hdr.IovLen;

    /// <summary>Readies every slot for recvmmsg, which overwrites lengths, flags and control lengths.</summary>
    public void ResetForReceive(int count)
    {
        for (var i = 0; i < count; i++)
        {
            Iovs[i].Base = Slot(i);
            Iovs[i].Len = (nuint)SlotBytes;
            ref var h = ref Msgs[i].Hdr;
            h.Iov = &Iovs[i];
            h.IovLen = 1;
            h.NameLen = (uint)sizeof(Native.SockAddrIn);
            h.Control = _controls + i * Native.CMsgHdr.Space4;
            h.ControlLen = Native.CMsgHdr.Space4;
            h.Flags = 0;
            Msgs[i].Len = 0;
        }
    }

    /// <summary>
    /// The size of each datagram in received message <paramref name="i"/> when UDP GRO joined several (all of
    /// that size but the last), or 0 when it is one datagram.
    /// </summary>
    public int GroSize(int i)
    {
        ref var h = ref Msgs[i].Hdr;
        if (h.ControlLen < Native.CMsgHdr.DataOffset + 4) return 0;
        var c = (Native.CMsgHdr*)h.Control;
        if (c->Level != Native.SOL_UDP || c->Type != Native.UDP_GRO) return 0;
        return *(int*)((byte*)c + Native.CMsgHdr.DataOffset);
    }

    public void Dispose()
    {
        NativeMemory.AlignedFree(Slots);
        NativeMemory.Free(Msgs);
        NativeMemory.Free(Iovs);
        NativeMemory.Free(Addrs);
        NativeMemory.Free(_controls);
        NativeMemory.Free(_segment);
        NativeMemory.Free(_closed);
    }
}
