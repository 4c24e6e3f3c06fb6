using System.Runtime.InteropServices;
using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// A fixed set of packet slots with their mmsghdr, iovec and address arrays, allocated once in
/// native memory so the kernel can read and write them with no pinning and no per-packet
/// allocation. Each slot keeps <see cref="Wire.HeaderSize"/> bytes of headroom so wrapping a
/// packet read from the TUN is a header write in place, not a copy.
/// </summary>
internal sealed unsafe class PacketBatch : IDisposable
{
    public const int SlotSize = 2048; // >= underlay MTU (1500) + headroom; TUN MTU is below it
    /// <summary>The longest packet a slot takes: room for the header before it and the AEAD tag after it.</summary>
    public const int MaxPacket = SlotSize - Wire.HeaderSize - Wire.TagSize;
    public readonly int Capacity;
    public readonly byte* Slots;
    public readonly Native.MMsgHdr* Msgs;
    public readonly Native.IoVec* Iovs;
    public readonly Native.SockAddrIn* Addrs;

    public PacketBatch(int capacity)
    {
        Capacity = capacity;
        Slots = (byte*)NativeMemory.AlignedAlloc((nuint)(capacity * SlotSize), 64);
        Msgs = (Native.MMsgHdr*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(Native.MMsgHdr)));
        Iovs = (Native.IoVec*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(Native.IoVec)));
        Addrs = (Native.SockAddrIn*)NativeMemory.AllocZeroed((nuint)(capacity * sizeof(Native.SockAddrIn)));
        for (var i = 0; i < capacity; i++)
        {
            Iovs[i].Base = Slot(i);
            Iovs[i].Len = SlotSize;
            Msgs[i].Hdr.Iov = &Iovs[i];
            Msgs[i].Hdr.IovLen = 1;
            Msgs[i].Hdr.Name = &Addrs[i];
            Msgs[i].Hdr.NameLen = (uint)sizeof(Native.SockAddrIn);
        }
    }

    public byte* Slot(int i) => Slots + (nint)i * SlotSize;

    /// <summary>Points every iovec back at its own slot (a flush borrows them for held packets).</summary>
    public void ResetIovBases()
    {
        for (var i = 0; i < Capacity; i++) Iovs[i].Base = Slot(i);
    }

    /// <summary>recvmmsg overwrites name and buffer lengths; restore them before the next call.</summary>
    public void ResetForReceive(int count)
    {
        for (var i = 0; i < count; i++)
        {
            Iovs[i].Len = SlotSize;
            Msgs[i].Hdr.NameLen = (uint)sizeof(Native.SockAddrIn);
            Msgs[i].Hdr.Flags = 0;
            Msgs[i].Len = 0;
        }
    }

    public void Dispose()
    {
        NativeMemory.AlignedFree(Slots);
        NativeMemory.Free(Msgs);
        NativeMemory.Free(Iovs);
        NativeMemory.Free(Addrs);
    }
}
