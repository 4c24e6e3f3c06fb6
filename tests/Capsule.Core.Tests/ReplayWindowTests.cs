namespace Capsule.Core.Tests;

public class ReplayWindowTests
{
    [Fact]
    public void Each_counter_once_in_any_order_within_the_window()
    {
        var w = new ReplayWindow();
        Assert.Equal(8128ul, w.Size);
        Assert.True(w.Accept(0));
        Assert.False(w.Accept(0));
        Assert.True(w.Accept(5));
        Assert.True(w.Accept(3));
        Assert.False(w.Accept(3));
        Assert.False(w.CanAccept(5));
        Assert.True(w.CanAccept(4));
        Assert.True(w.Accept(4));
    }

    [Fact]
    public void Reached_is_one_past_the_highest_counter_accepted()
    {
        var w = new ReplayWindow();
        Assert.Equal(0ul, w.Reached);
        Assert.True(w.Accept(0));
        Assert.Equal(1ul, w.Reached);
        Assert.True(w.Accept(9));
        Assert.True(w.Accept(4)); // a late one below the highest leaves it where it is
        Assert.Equal(10ul, w.Reached);
        Assert.False(w.CanAccept(9));
        Assert.False(w.Accept(9)); // a replay moves nothing
        Assert.Equal(10ul, w.Reached);
    }

    [Fact]
    public void Below_the_window_is_refused_and_its_edge_accepted()
    {
        var w = new ReplayWindow();
        Assert.True(w.Accept(100_000));
        Assert.False(w.CanAccept(100_000 - w.Size - 1));
        Assert.False(w.Accept(100_000 - w.Size - 1));
        Assert.True(w.CanAccept(100_000 - w.Size));
        Assert.True(w.Accept(100_000 - w.Size));
        Assert.False(w.Accept(100_000 - w.Size));
    }

    [Fact]
    public void A_big_jump_forgets_everything_behind_it()
    {
        var w = new ReplayWindow(4);
        for (ulong c = 0; c < 200; c++) Assert.True(w.Accept(c));
        Assert.True(w.Accept(1_000_000));
        Assert.False(w.Accept(199));
        Assert.True(w.Accept(1_000_000 - 5));
        Assert.True(w.Accept(ulong.MaxValue));
        Assert.False(w.Accept(ulong.MaxValue));
        Assert.False(w.Accept(1_000_000));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(100)]
    public void Ring_size_must_be_a_power_of_two_of_two_or_more(int blocks) =>
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReplayWindow(blocks));

    /// <summary>The rule restated with a set and a maximum: the oracle.</summary>
    sealed class Model(ulong size)
    {
        readonly HashSet<ulong> _seen = [];
        ulong _max;

        public bool CanAccept(ulong c) => !_seen.Contains(c) && (c > _max || _max - c <= size);

        public bool Accept(ulong c)
        {
            if (!CanAccept(c)) return false;
            _seen.Add(c);
            _max = Math.Max(_max, c);
            return true;
        }
    }

    // Counters as traffic makes them: mostly near the front, some reordered back, some far jumps, some repeats.
    static readonly Gen<long[]> Steps = Gen.OneOf(
        Gen.Long[-3, 3], Gen.Long[-300, 300], Gen.Long[-70, 70], Gen.Long[-5000, 5000],
        Gen.Long[0, 1L << 40]).Array[1, 400];

    static IEnumerable<ulong> Counters(long[] steps)
    {
        long at = 0;
        foreach (var s in steps)
        {
            at = Math.Max(0, at + s);
            yield return (ulong)at;
        }
    }

    [Fact]
    public void Property_matches_the_set_and_maximum_model()
    {
        Gen.Select(Steps, Gen.OneOf(Gen.Const(2), Gen.Const(4), Gen.Const(128))).Sample((steps, blocks) =>
        {
            var w = new ReplayWindow(blocks);
            var m = new Model(w.Size);
            foreach (var c in Counters(steps))
            {
                Assert.Equal(m.CanAccept(c), w.CanAccept(c));
                Assert.Equal(m.Accept(c), w.Accept(c));
            }
        }, iter: 5_000);
    }

    [Fact]
    public void Property_a_sequence_replayed_is_refused_whole()
    {
        Steps.Sample(steps =>
        {
            var w = new ReplayWindow();
            var all = Counters(steps).ToList();
            foreach (var c in all) w.Accept(c);
            foreach (var c in all) Assert.False(w.Accept(c));
        }, iter: 2_000);
    }

    [Fact]
    public void Two_threads_accepting_the_same_counters_accept_each_once()
    {
        // A datagram replayed from another source port reaches another receiving lane: both threads then try the
        // same counters on one window, and each counter must still be accepted exactly once.
        var w = new ReplayWindow();
        const int Count = 200_000;
        var accepted = new int[2];
        using var start = new Barrier(2);
        var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            start.SignalAndWait();
            for (var c = 0UL; c < Count; c++)
                if (w.Accept(c)) accepted[t]++;
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.Equal(Count, accepted[0] + accepted[1]);
        Assert.Equal((ulong)Count, w.Reached);
    }
}
