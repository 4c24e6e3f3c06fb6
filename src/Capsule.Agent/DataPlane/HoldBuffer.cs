using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// Packets for a capsule that is moving, kept in arrival order until it runs again (seed Fig. 6).
/// Bounded: its memory is taken once when the hold starts; when full, the newest packet is dropped
/// and counted, so TCP retransmits it later rather than the agent growing without limit. A ring:
/// a drain takes packets off the front while packets read meanwhile join at the back, so the
/// slots a burst has sent are free again for what arrives behind it. Owned by lane 0's egress thread; the other
/// lanes add to it only under its hold's lock (<see cref="Hold.Gate"/>), which the owner takes to drain it.
///
/// A holder that pauses a TCP peer acknowledges held segments in the capsule's name, so the peer
/// forgets them: they then exist nowhere but here. A buffer made with <see cref="Create"/> lives in
/// a spool file mapped shared, whose pages outlive the agent (SIGKILL included): the next agent on
/// the host finds the file with <see cref="Open"/> and delivers what it holds (see
/// docs/migration.md, "Holds outlive their holder").
/// </summary>
internal sealed unsafe class HoldBuffer : IDisposable
{
    // Layout, in memory and in a spool file alike: a 64-byte header, the packets' lengths, then the
    // slots from the next page on. The header's cursor packs the ring's head (low half) and count
    // (high half) in one 8-byte word: one aligned store, so a crash never sees one without the other.
    const long Magic = 0x31444C4F48504143; // "CAPHOLD1"
    const int HeaderSize = 64, MagicAt = 0, LocatorAt = 8, CapacityAt = 12, FlagsAt = 16, CursorAt = 24;
    const int Page = 4096;

    readonly byte* _base;
    readonly byte* _slots;
    readonly int* _lengths;
    readonly long* _cursor;
    readonly MemoryMappedFile? _file;
    readonly MemoryMappedViewAccessor? _view;
    bool _disposed;

    public int Capacity { get; }
    public long Dropped { get; private set; }

    /// <summary>The capsule this buffer holds for (kept in the spool file, so a recovered buffer knows it).</summary>
    public Locator Locator => new(*(uint*)(_base + LocatorAt));

    /// <summary>The spool file behind this buffer, or null when it lives in the agent's memory alone.</summary>
    public string? SpoolPath { get; }

    /// <summary>The capsule's policy for UDP while it moves: drop (and count) rather than hold.</summary>
    public bool DropUdp => (*(int*)(_base + FlagsAt) & 1) != 0;

    /// <summary>
    /// Set once the capsule runs again and the buffer drains: what joins behind the held packets
    /// then only waits for its turn, so the moving-capsule policy no longer drops UDP.
    /// </summary>
    public bool Draining { get; set; }

    public int Count => (int)(Volatile.Read(ref *_cursor) >> 32);
    int Head => (int)(uint)Volatile.Read(ref *_cursor);

    /// <summary>A buffer in the agent's own memory: lost with the agent.</summary>
    public HoldBuffer(int capacity, bool dropUdp, Locator locator = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _base = (byte*)NativeMemory.AlignedAlloc((nuint)Size(capacity), Page);
        new Span<byte>(_base, HeaderSize + capacity * sizeof(int)).Clear();
        _slots = _base + SlotsAt(capacity);
        _lengths = (int*)(_base + HeaderSize);
        _cursor = (long*)(_base + CursorAt);
        WriteHeader(locator, capacity, dropUdp);
    }

    HoldBuffer(MemoryMappedFile file, MemoryMappedViewAccessor view, string path, int capacity)
    {
        _file = file;
        _view = view;
        SpoolPath = path;
        Capacity = capacity;
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + view.PointerOffset;
        _slots = _base + SlotsAt(capacity);
        _lengths = (int*)(_base + HeaderSize);
        _cursor = (long*)(_base + CursorAt);
    }

    /// <summary>A buffer in a new spool file at <paramref name="path"/> (replacing a stale one).</summary>
    public static HoldBuffer Create(string path, Locator locator, int capacity, bool dropUdp)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        var size = Size(capacity);
        // A new file is sparse (all zeroes): only the pages packets touch take memory.
        using (var f = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
            f.SetLength(size);
        var buffer = Map(path, capacity, size);
        buffer.WriteHeader(locator, capacity, dropUdp);
        return buffer;
    }

    /// <summary>
    /// The buffer a previous agent left in <paramref name="path"/>, with every packet it held; null,
    /// with the reason, when the file is not a whole spool (it is then of no use to anyone).
    /// </summary>
    public static HoldBuffer? Open(string path, out string? problem)
    {
        problem = null;
        long length;
        Span<byte> header = stackalloc byte[HeaderSize];
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.None))
        {
            length = f.Length;
            if (length < HeaderSize || f.ReadAtLeast(header, HeaderSize, throwOnEndOfStream: false) < HeaderSize)
                problem = "shorter than a header";
        }
        if (problem is not null) return null;
        var capacity = MemoryMarshal.Read<int>(header[CapacityAt..]);
        var cursor = MemoryMarshal.Read<long>(header[CursorAt..]);
        var (head, count) = ((int)(uint)cursor, (int)(cursor >> 32));
        if (MemoryMarshal.Read<long>(header) != Magic) problem = "not a hold spool";
        else if (capacity < 1 || Size(capacity) != length)
            problem = $"capacity {capacity} does not fit its length {length}";
        else if (head < 0 || head >= capacity || count < 0 || count > capacity)
            problem = $"cursor {head}+{count} out of range";
        if (problem is not null) return null;
        var buffer = Map(path, capacity, length);
        for (var i = 0; i < count; i++)
            if (buffer.Length(i) is < 1 or > PacketBatch.MaxPacket)
            {
                buffer.Detach();
                problem = $"packet {i} has length {buffer.Length(i)}";
                return null;
            }
        return buffer;
    }

    static HoldBuffer Map(string path, int capacity, long size)
    {
        var file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, size, MemoryMappedFileAccess.ReadWrite);
        try
        {
            return new HoldBuffer(file, file.CreateViewAccessor(0, size), path, capacity);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    static long Size(int capacity) =>
        SlotsAt(capacity) + (long)capacity * PacketBatch.SlotSize;

    static long SlotsAt(int capacity) => (HeaderSize + (long)capacity * sizeof(int) + Page - 1) / Page * Page;

    void WriteHeader(Locator locator, int capacity, bool dropUdp)
    {
        *(uint*)(_base + LocatorAt) = locator.Value;
        *(int*)(_base + CapacityAt) = capacity;
        *(int*)(_base + FlagsAt) = dropUdp ? 1 : 0;
        *(long*)(_base + CursorAt) = 0;
        // The magic last: a file with it is a whole header.
        Volatile.Write(ref *(long*)(_base + MagicAt), Magic);
    }

    void SetCursor(int head, int count) => Volatile.Write(ref *_cursor, (long)count << 32 | (uint)head);

    /// <summary>Copies a packet in at the back; false (and counted) when full or the policy drops it.</summary>
    public bool TryAdd(ReadOnlySpan<byte> packet)
    {
        var count = Count;
        var refused = count == Capacity
            || (DropUdp && !Draining && Ipv4.Protocol(packet) == 17)
            || packet.Length > PacketBatch.MaxPacket;
        if (refused)
        {
            Dropped++;
            return false;
        }
        var at = Physical(count);
        var room = PacketBatch.SlotSize - Wire.HeaderSize;
        packet.CopyTo(new Span<byte>(_slots + (nint)at * PacketBatch.SlotSize + Wire.HeaderSize, room));
        _lengths[at] = packet.Length;
        // Counted only once the packet and its length are in place: a crash in between loses
        // nothing that was acknowledged, since the acknowledgement comes after this returns.
        SetCursor(Head, count + 1);
        return true;
    }

    /// <summary>The i-th packet from the front: headroom for the overlay header, then the packet.</summary>
    public byte* Slot(int i) => _slots + (nint)Physical(i) * PacketBatch.SlotSize;

    public int Length(int i) => _lengths[Physical(i)];

    /// <summary>Forgets the first <paramref name="n"/> packets (sent, or written to the TUN).</summary>
    public void RemoveFirst(int n) => SetCursor(Physical(n), Count - n);

    /// <summary>Forgets every packet; returns how many there were.</summary>
    public int Clear()
    {
        var n = Count;
        SetCursor(0, 0);
        return n;
    }

    int Physical(int i)
    {
        var p = Head + i;
        return p >= Capacity ? p - Capacity : p;
    }

    /// <summary>Lets go of the buffer but keeps its spool file, for the next agent (shutdown).</summary>
    public void Detach() => Release(deleteSpool: false);

    /// <summary>The hold is over: its memory is freed and its spool file deleted.</summary>
    public void Dispose() => Release(deleteSpool: true);

    void Release(bool deleteSpool)
    {
        if (_disposed) return;
        _disposed = true;
        if (_view is null)
        {
            NativeMemory.AlignedFree(_base);
            return;
        }
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file!.Dispose();
        if (deleteSpool) File.Delete(SpoolPath!);
    }
}
