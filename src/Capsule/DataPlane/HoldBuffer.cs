using System.Runtime.InteropServices;
using Capsule.Core;

namespace Capsule.DataPlane;

/// <summary>
/// Packets for a capsule that is moving, kept in arrival order until it runs again (seed Fig. 6).
/// Bounded: its memory is taken once when the hold starts; when full, the newest packet is dropped
/// and counted, so TCP retransmits it later rather than the agent growing without limit. A ring:
/// a drain takes packets off the front while packets read meanwhile join at the back, so the
/// slots a burst has sent are free again for what arrives behind it. Owned by the egress thread alone.
/// </summary>
internal sealed unsafe class HoldBuffer : IDisposable
{
    readonly byte* _slots;
    readonly int[] _lengths;
    int _head;
    public int Capacity { get; }
    public int Count { get; private set; }
    public long Dropped { get; private set; }

    /// <summary>The capsule's policy for UDP while it moves: drop (and count) rather than hold.</summary>
    public bool DropUdp { get; }

    /// <summary>
    /// Set once the capsule runs again and the buffer drains: what joins behind the held packets
    /// then only waits for its turn, so the moving-capsule policy no longer drops UDP.
    /// </summary>
    public bool Draining { get; set; }

    public HoldBuffer(int capacity, bool dropUdp)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        DropUdp = dropUdp;
        _slots = (byte*)NativeMemory.Alloc((nuint)capacity * PacketBatch.SlotSize);
        _lengths = new int[capacity];
    }

    /// <summary>Copies a packet in at the back; false (and counted) when full or the policy drops it.</summary>
    public bool TryAdd(ReadOnlySpan<byte> packet)
    {
        var refused = Count == Capacity
            || (DropUdp && !Draining && Ipv4.Protocol(packet) == 17)
            || packet.Length > PacketBatch.SlotSize - Wire.HeaderSize;
        if (refused)
        {
            Dropped++;
            return false;
        }
        var at = Physical(Count);
        var room = PacketBatch.SlotSize - Wire.HeaderSize;
        packet.CopyTo(new Span<byte>(_slots + (nint)at * PacketBatch.SlotSize + Wire.HeaderSize, room));
        _lengths[at] = packet.Length;
        Count++;
        return true;
    }

    /// <summary>The i-th packet from the front: headroom for the overlay header, then the packet.</summary>
    public byte* Slot(int i) => _slots + (nint)Physical(i) * PacketBatch.SlotSize;

    public int Length(int i) => _lengths[Physical(i)];

    /// <summary>Forgets the first <paramref name="n"/> packets (sent, or written to the TUN).</summary>
    public void RemoveFirst(int n)
    {
        _head = Physical(n);
        Count -= n;
    }

    /// <summary>Forgets every packet; returns how many there were.</summary>
    public int Clear()
    {
        var n = Count;
        _head = 0;
        Count = 0;
        return n;
    }

    int Physical(int i)
    {
        var p = _head + i;
        return p >= Capacity ? p - Capacity : p;
    }

    public void Dispose() => NativeMemory.Free(_slots);
}
