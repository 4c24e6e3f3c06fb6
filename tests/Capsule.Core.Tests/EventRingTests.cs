namespace Capsule.Core.Tests;

public class EventRingTests
{
    static EventRing<string> Filled(int capacity, int count)
    {
        var ring = new EventRing<string>(capacity);
        for (var i = 1; i <= count; i++) ring.Add(seq => $"e{seq}");
        return ring;
    }

    [Fact]
    public void Numbers_events_from_one_and_reads_them_oldest_first()
    {
        var ring = Filled(8, 3);
        Assert.Equal(3, ring.LastSeq);
        var (entries, missed) = ring.Read(0);
        Assert.Equal(0, missed);
        Assert.Equal([1L, 2L, 3L], entries.Select(e => e.Seq));
        Assert.Equal(["e1", "e2", "e3"], entries.Select(e => e.Item));
        Assert.Equal([3L], ring.Read(2).Entries.Select(e => e.Seq));
        Assert.Empty(ring.Read(3).Entries);
        Assert.Empty(ring.Read(99).Entries);
    }

    [Fact]
    public void An_empty_ring_reads_nothing_and_misses_nothing()
    {
        var ring = new EventRing<string>(4);
        Assert.Equal(0, ring.LastSeq);
        var (entries, missed) = ring.Read(0);
        Assert.Empty(entries);
        Assert.Equal(0, missed);
    }

    [Fact]
    public void Keeps_only_the_newest_capacity_events_and_says_how_many_a_reader_missed()
    {
        var ring = Filled(4, 10);
        var (entries, missed) = ring.Read(0);
        Assert.Equal([7L, 8L, 9L, 10L], entries.Select(e => e.Seq));
        Assert.Equal(["e7", "e8", "e9", "e10"], entries.Select(e => e.Item));
        Assert.Equal(6, missed);
        // A reader that had seen up to 5 missed 6 only.
        (entries, missed) = ring.Read(5);
        Assert.Equal(1, missed);
        Assert.Equal(4, entries.Count);
        (entries, missed) = ring.Read(8);
        Assert.Equal(0, missed);
        Assert.Equal([9L, 10L], entries.Select(e => e.Seq));
    }

    [Fact]
    public void Bounded_and_in_order_whatever_the_capacity_and_the_count()
    {
        Gen.Select(Gen.Int[1, 50], Gen.Int[0, 400], Gen.Int[0, 420]).Sample((capacity, count, after) =>
        {
            var ring = Filled(capacity, count);
            var (entries, missed) = ring.Read(after);
            var expectedFirst = Math.Max(after + 1, count - capacity + 1);
            Assert.True(entries.Count <= capacity);
            Assert.Equal(Math.Max(0, count - expectedFirst + 1), entries.Count);
            for (var i = 0; i < entries.Count; i++)
            {
                Assert.Equal(expectedFirst + i, entries[i].Seq);
                Assert.Equal($"e{entries[i].Seq}", entries[i].Item);
            }
            Assert.Equal(Math.Max(0, Math.Min(count, expectedFirst - 1) - after), missed);
        });
    }

    [Fact]
    public async Task A_waiting_reader_wakes_with_the_next_event_and_not_before()
    {
        var ring = Filled(4, 2);
        Assert.True(ring.WhenAddedAfter(1).IsCompleted); // event 2 is there already
        var waiting = ring.WhenAddedAfter(2);
        Assert.False(waiting.IsCompleted);
        ring.Add(seq => $"e{seq}");
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal([3L], ring.Read(2).Entries.Select(e => e.Seq));
    }

    [Fact]
    public async Task A_waiting_reader_can_give_up()
    {
        var ring = new EventRing<string>(4);
        using var cts = new CancellationTokenSource();
        var waiting = ring.WhenAddedAfter(0, cts.Token);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
    }

    [Fact]
    public async Task Concurrent_writers_number_every_event_once()
    {
        var ring = new EventRing<long>(10_000);
        await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() =>
        {
            for (var i = 0; i < 1000; i++) ring.Add(seq => seq);
        })));
        var (entries, missed) = ring.Read(0);
        Assert.Equal(0, missed);
        Assert.Equal(Enumerable.Range(1, 8000).Select(i => (long)i), entries.Select(e => e.Seq));
        Assert.All(entries, e => Assert.Equal(e.Seq, e.Item));
    }

    [Fact]
    public void A_ring_holds_at_least_one_event()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new EventRing<string>(0));
        var ring = Filled(1, 3);
        Assert.Equal(["e3"], ring.Read(0).Entries.Select(e => e.Item));
    }
}
