namespace Capsule.Core.Tests;

public class BoundedTableTests
{
    sealed class Entry(long used, bool pinned = false)
    {
        public long Used = used;
        public bool Pinned = pinned;
    }

    static BoundedTable<int, Entry> Table(int capacity) => new(capacity, e => e.Used, e => e.Pinned);

    [Fact]
    public void Holds_entries_up_to_its_capacity_without_evicting()
    {
        var t = Table(16);
        for (var i = 0; i < 16; i++) Assert.NotNull(t.GetOrAdd(i, k => new Entry(k)));
        Assert.Equal(16, t.Count);
        Assert.Equal((0L, 0L), (t.Evicted, t.Refused));
        var again = t.GetOrAdd(3, _ => throw new InvalidOperationException("an existing entry is not made again"));
        Assert.Equal(3, again!.Used);
    }

    [Fact]
    public void When_full_evicts_the_entries_used_longest_ago_an_eighth_at_a_time()
    {
        var t = Table(16);
        // Ages out of key order, so the test sees that eviction follows use, not insertion.
        for (var i = 0; i < 16; i++) t.GetOrAdd(i, k => new Entry((k * 7) % 16));
        Assert.NotNull(t.GetOrAdd(100, _ => new Entry(100)));
        Assert.Equal(2, t.Evicted);
        Assert.Equal(15, t.Count);
        var gone = Enumerable.Range(0, 16).Where(k => !t.TryGetValue(k, out _)).ToList();
        Assert.Equal([0, 7], gone); // used at 0 and 1
    }

    [Fact]
    public void Never_evicts_a_pinned_entry_and_refuses_when_all_are_pinned()
    {
        var t = Table(8);
        for (var i = 0; i < 8; i++) t.GetOrAdd(i, k => new Entry(k, pinned: k != 5));
        Assert.NotNull(t.GetOrAdd(50, _ => new Entry(99)));
        Assert.False(t.TryGetValue(5, out _));
        Assert.Equal(1, t.Evicted);
        t.TryGetValue(50, out var added);
        added.Pinned = true;
        Assert.Null(t.GetOrAdd(51, _ => new Entry(100)));
        Assert.Equal((1L, 1L), (t.Evicted, t.Refused));
        Assert.Equal(8, t.Count);
        Assert.All(Enumerable.Range(0, 8).Where(k => k != 5), k => Assert.True(t.TryGetValue(k, out _)));
    }

    [Fact]
    public void Removing_frees_a_place()
    {
        var t = Table(4);
        for (var i = 0; i < 4; i++) t.GetOrAdd(i, k => new Entry(k, pinned: true));
        Assert.True(t.TryRemove(2));
        Assert.False(t.TryRemove(2));
        Assert.Equal(2, t.RemoveWhere((k, _) => k < 2));
        Assert.NotNull(t.GetOrAdd(9, _ => new Entry(9, pinned: true)));
        Assert.Equal((2, 0L, 0L), (t.Count, t.Evicted, t.Refused));
    }

    [Fact]
    public void Never_holds_more_than_its_capacity_whatever_is_added_and_removed()
    {
        Gen.Select(Gen.Int[1, 40], Gen.Int[0, 60].Array[0, 300], Gen.Bool.Array[300]).Sample((cap, keys, pins) =>
        {
            var t = Table(cap);
            var clock = 0L;
            for (var i = 0; i < keys.Length; i++)
            {
                if (pins[i] && t.TryRemove(keys[i])) continue;
                var e = t.GetOrAdd(keys[i], _ => new Entry(clock, pinned: pins[i] && i % 3 == 0));
                if (e is not null) e.Used = ++clock;
                if (t.Count > cap || t.Count != t.Count()) return false;
            }
            return true;
        });
    }

    [Fact]
    public void Concurrent_adders_never_pass_the_cap()
    {
        var t = Table(64);
        Parallel.For(0, 4, w =>
        {
            for (var i = 0; i < 5_000; i++)
                t.GetOrAdd(w * 100_000 + i, k => new Entry(k));
        });
        Assert.True(t.Count <= 64, $"{t.Count} entries");
        Assert.Equal(t.Count, t.Count());
    }
}
