using System.Numerics;

namespace Capsule.Core;

/// <summary>
/// The sliding anti-replay window of one receive key (RFC 6479, as WireGuard uses it): a ring of
/// 64-bit blocks; a counter is accepted once, if it is above the highest seen or at most
/// <see cref="Size"/> below it. Only counters of datagrams whose tag verified may be passed to
/// <see cref="Accept"/>, or a forger could move the window. One thread uses an instance as a rule, but a datagram
/// replayed from another source port lands on another receiving thread: <see cref="Accept"/> takes a lock (never
/// contended in the ordinary case), and <see cref="CanAccept"/> is a lock-free first look that it confirms. Another
/// thread may read <see cref="Reached"/>.
/// </summary>
public sealed class ReplayWindow
{
    public const int DefaultBlocks = 128; // 8192 bits: 8128 packets of reordering tolerated
    const int BlockBits = 64;
    readonly ulong[] _ring;
    readonly ulong _mask;
    readonly Lock _gate = new();
    ulong _last;
    ulong _reached;

    /// <param name="blocks">Ring size in 64-bit blocks, a power of two, at least 2.</param>
    public ReplayWindow(int blocks = DefaultBlocks)
    {
        if (blocks < 2 || !BitOperations.IsPow2(blocks))
            throw new ArgumentOutOfRangeException(nameof(blocks), "a power of two, at least 2");
        _ring = new ulong[blocks];
        _mask = (ulong)blocks - 1;
        Size = (ulong)(blocks - 1) * BlockBits;
    }

    /// <summary>How far below the highest counter seen a counter is still accepted.</summary>
    public ulong Size { get; }

    /// <summary>
    /// One past the highest counter accepted (0: none yet): the sender's count of datagrams sealed under this key
    /// that have arrived, as far as the sequence goes. The migration cut waits on it. Safe to read from any thread.
    /// </summary>
    public ulong Reached => Volatile.Read(ref _reached);

    /// <summary>Would <see cref="Accept"/> take it? No state changes (a cheap check before the tag's).</summary>
    public bool CanAccept(ulong counter)
    {
        if (counter > _last) return true;
        if (_last - counter > Size) return false;
        return (_ring[(counter / BlockBits) & _mask] & (1UL << (int)(counter % BlockBits))) == 0;
    }

    /// <summary>Marks <paramref name="counter"/> seen; false when it was seen already or is below the window.</summary>
    public bool Accept(ulong counter)
    {
        lock (_gate) return AcceptLocked(counter);
    }

    bool AcceptLocked(ulong counter)
    {
        var block = counter / BlockBits;
        if (counter > _last)
        {
            // Blocks the window slides over are cleared: what they held is now below it.
            var current = _last / BlockBits;
            var diff = Math.Min(block - current, (ulong)_ring.Length);
            for (var i = current + 1; i <= current + diff; i++) _ring[i & _mask] = 0;
            _last = counter;
        }
        else if (_last - counter > Size) return false;
        ref var slot = ref _ring[block & _mask];
        var bit = 1UL << (int)(counter % BlockBits);
        if ((slot & bit) != 0) return false;
        slot |= bit;
        if (counter >= _reached) Volatile.Write(ref _reached, counter == ulong.MaxValue ? counter : counter + 1);
        return true;
    }
}
