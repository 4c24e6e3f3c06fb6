namespace Capsule.Core;

/// <summary>
/// The newest <see cref="Capacity"/> events, each numbered (1, 2, ...) as it is added. Bounded on
/// purpose: an agent runs for months and nobody may ever ask, so the oldest events make room. A
/// reader that remembers the last number it saw asks for what came after, learns how many of those
/// were already overwritten, and can wait for the next one. Safe for any number of writers and readers.
/// </summary>
public sealed class EventRing<T>
{
    public readonly record struct Entry(long Seq, T Item);

    readonly Entry[] _entries;
    readonly Lock _gate = new();
    long _last; // number of the newest event; 0 while empty
    TaskCompletionSource _added = NewSignal();

    public EventRing(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _entries = new Entry[capacity];
    }

    public int Capacity => _entries.Length;

    public long LastSeq
    {
        get
        {
            lock (_gate) return _last;
        }
    }

    // Continuations run elsewhere: a waiting reader must never run on the thread that adds.
    static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Adds the event <paramref name="create"/> makes from its number; made under the ring's lock,
    /// so numbers (and anything else the event takes at that moment, such as its time) follow the
    /// order of the ring.
    /// </summary>
    public long Add(Func<long, T> create)
    {
        TaskCompletionSource added;
        long seq;
        lock (_gate)
        {
            seq = _last + 1;
            _entries[seq % _entries.Length] = new Entry(seq, create(seq));
            _last = seq;
            added = _added;
            _added = NewSignal();
        }
        added.SetResult();
        return seq;
    }

    /// <summary>
    /// The events numbered after <paramref name="afterSeq"/> that the ring still holds, oldest first,
    /// and how many after it were overwritten before this read.
    /// </summary>
    public (IReadOnlyList<Entry> Entries, long Missed) Read(long afterSeq)
    {
        lock (_gate)
        {
            var first = Math.Max(Math.Max(afterSeq, 0) + 1, _last - _entries.Length + 1);
            var missed = Math.Max(0, first - Math.Max(afterSeq, 0) - 1);
            var list = new List<Entry>((int)Math.Max(0, _last - first + 1));
            for (var seq = first; seq <= _last; seq++) list.Add(_entries[seq % _entries.Length]);
            return (list, missed);
        }
    }

    /// <summary>
    /// Completes at once when the ring has an event numbered after <paramref name="afterSeq"/>, else
    /// with the next event added (a reader then reads again).
    /// </summary>
    public Task WhenAddedAfter(long afterSeq, CancellationToken ct = default)
    {
        lock (_gate)
            return _last > afterSeq ? Task.CompletedTask : _added.Task.WaitAsync(ct);
    }
}
