using System.Runtime.InteropServices;
using Capsule.Core;

namespace Capsule.DataPlane;

/// <summary>
/// Packets for a capsule that is moving, kept in arrival order until it runs again (seed Fig. 6).
/// Bounded: its memory is taken once when the hold starts; when full, the newest packet is dropped
/// and counted, so TCP retransmits it later rather than the agent growing without limit. Owned
/// by the egress thread alone.
/// </summary>
internal sealed unsafe class HoldBuffer : IDisposable
{
    readonly byte* _slots;
    readonly int[] _lengths;
    public int Capacity { get; }
    public int Count { get; private set; }
    public long Dropped { get; private set; }

    /// <summary>The capsule's policy for UDP while it moves: drop (and count) rather than hold.</summary>
    public bool DropUdp { get; }

    public HoldBuffer(int capacity, bool dropUdp)
    {
        Capacity = capacity;
        DropUdp = dropUdp;
        _slots = (byte*)NativeMemory.Alloc((nuint)capacity * PacketBatch.SlotSize);
        _lengths = new int[capacity];
    }

    /// <summary>Copies a packet in; false (and counted) when the buffer is full or the policy drops it.</summary>
    public bool TryAdd(ReadOnlySpan<byte> packet)
    {
        if (Count == Capacity || (DropUdp && Ipv4.Protocol(packet) == 17) || packet.Length > PacketBatch.SlotSize - Wire.HeaderSize) { Dropped++; return false; }
        packet.CopyTo(new Span<byte>(_slots + (nint)Count * PacketBatch.SlotSize + Wire.HeaderSize, PacketBatch.SlotSize - Wire.HeaderSize));
        _lengths[Count++] = packet.Length;
        return true;
    }

    /// <summary>Slot i: headroom for the overlay header, then the packet.</summary>
    public byte* Slot(int i) => _slots + (nint)i * PacketBatch.SlotSize;
    public int Length(int i) => _lengths[i];

    public void Dispose() => NativeMemory.Free(_slots);
}
