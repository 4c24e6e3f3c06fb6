using System.Collections;
using System.Collections.Concurrent;

namespace Capsule.Core;

/// <summary>
/// A concurrent map with a hard cap on its entries, for state that an outsider can make grow (a
/// flow learned per packet from the network): when full, the entries used longest ago are evicted
/// to make room, never a pinned one (state a running operation needs); when every entry is pinned
/// the new one is refused. Both are counted. Eviction scans the table, so it evicts a batch (an
/// eighth of the cap) at once: a flood of new keys then costs a scan per batch, not per key.
/// One thread adds (the others may read, remove and enumerate); the cap holds for any number of adders.
/// </summary>
public sealed class BoundedTable<TKey, TValue> : IEnumerable<KeyValuePair<TKey, TValue>>
    where TKey : notnull
    where TValue : class
{
    readonly ConcurrentDictionary<TKey, TValue> _map = new();
    readonly Func<TValue, long> _lastUsed;
    readonly Func<TValue, bool> _pinned;
    int _count;
    long _evicted, _refused;

    /// <param name="capacity">Most entries ever held (at least 1).</param>
    /// <param name="lastUsed">When an entry was last used (any clock that grows): the smallest goes first.</param>
    /// <param name="pinned">Entries that must never be evicted.</param>
    public BoundedTable(int capacity, Func<TValue, long> lastUsed, Func<TValue, bool> pinned)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _lastUsed = lastUsed;
        _pinned = pinned;
    }

    public int Capacity { get; }
    public int Count => Volatile.Read(ref _count);
    /// <summary>Entries removed to make room for new ones.</summary>
    public long Evicted => Interlocked.Read(ref _evicted);
    /// <summary>New entries refused because every entry held was pinned.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    public bool TryGetValue(TKey key, out TValue value) => _map.TryGetValue(key, out value!);

    /// <summary>
    /// The entry for <paramref name="key"/>, made by <paramref name="create"/> when there is none and
    /// there is room (or room made); null when the table is full of pinned entries.
    /// </summary>
    public TValue? GetOrAdd(TKey key, Func<TKey, TValue> create)
    {
        if (_map.TryGetValue(key, out var found)) return found;
        if (!Reserve())
        {
            Interlocked.Increment(ref _refused);
            return null;
        }
        var value = create(key);
        if (_map.TryAdd(key, value)) return value;
        // Another thread added it first: give the reserved place back.
        Interlocked.Decrement(ref _count);
        return _map.TryGetValue(key, out found) ? found : null;
    }

    public bool TryRemove(TKey key)
    {
        if (!_map.TryRemove(key, out _)) return false;
        Interlocked.Decrement(ref _count);
        return true;
    }

    /// <summary>Removes every entry <paramref name="match"/> selects; returns how many.</summary>
    public int RemoveWhere(Func<TKey, TValue, bool> match)
    {
        var removed = 0;
        foreach (var (key, value) in _map)
            if (match(key, value) && TryRemove(key)) removed++;
        return removed;
    }

    public IEnumerator<KeyValuePair<TKey, TValue>> GetEnumerator() => _map.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Takes a place for one more entry, evicting to make room; false when none can be made.</summary>
    bool Reserve()
    {
        for (var attempt = 0; attempt < 2; attempt++)
        {
            if (Interlocked.Increment(ref _count) <= Capacity) return true;
            Interlocked.Decrement(ref _count);
            if (EvictOldest(Math.Max(1, Capacity / 8)) == 0) return false;
        }
        return false;
    }

    /// <summary>Evicts up to <paramref name="n"/> unpinned entries, those used longest ago first.</summary>
    int EvictOldest(int n)
    {
        // A max-heap by age of the n oldest seen so far: its root is the youngest of them, replaced by anything older.
        var oldest = new PriorityQueue<TKey, long>(n, Comparer<long>.Create((a, b) => b.CompareTo(a)));
        foreach (var (key, value) in _map)
        {
            if (_pinned(value)) continue;
            var used = _lastUsed(value);
            if (oldest.Count < n) oldest.Enqueue(key, used);
            else if (oldest.TryPeek(out _, out var youngest) && used < youngest) oldest.EnqueueDequeue(key, used);
        }
        var evicted = 0;
        while (oldest.TryDequeue(out var key, out _))
        {
            if (!_map.TryGetValue(key, out var value) || _pinned(value)) continue;
            if (!_map.TryRemove(KeyValuePair.Create(key, value))) continue;
            // Pinned by another thread while it was being taken out: back it goes, a pinned entry stays.
            if (_pinned(value) && _map.TryAdd(key, value)) continue;
            Interlocked.Decrement(ref _count);
            evicted++;
        }
        Interlocked.Add(ref _evicted, evicted);
        return evicted;
    }
}
