using Capsule.Core;

namespace Capsule.Core.Tests;

public sealed class TokenBucketTests
{
    const long Hz = 1_000_000; // microsecond ticks

    [Theory]
    [InlineData("50M", 50L << 20)]
    [InlineData("10M/s", 10L << 20)]
    [InlineData(" 512k/S ", 512L << 10)]
    [InlineData("1000", 1000L)]
    public void Rates_are_sizes_per_second(string text, long rate) => Assert.Equal(rate, ByteRate.Parse(text));

    [Theory]
    [InlineData("0")]
    [InlineData("0M")]
    [InlineData("")]
    [InlineData("/s")]
    [InlineData("fast")]
    [InlineData("-5M")]
    public void A_rate_that_is_not_positive_or_not_a_size_is_refused(string text) => Assert.Null(ByteRate.Parse(text));

    [Fact]
    public void The_burst_passes_at_once_and_then_the_rate_paces()
    {
        var b = new TokenBucket(1000, 500);
        Assert.Equal(0, b.Take(500, 0, Hz));
        // 250 bytes more at 1000 B/s: a quarter of a second.
        Assert.Equal(Hz / 4, b.Take(250, 0, Hz));
        // A chunk larger than the burst passes, and puts the bucket in debt for its whole size.
        var c = new TokenBucket(1000, 10);
        Assert.Equal(0, c.Take(10, 0, Hz));
        Assert.Equal(2 * Hz, c.Take(2000, 0, Hz));
    }

    [Fact]
    public void Idle_time_refills_no_more_than_the_burst()
    {
        var b = new TokenBucket(1000, 100);
        b.Take(100, 0, Hz);
        Assert.Equal(0, b.Take(100, 60 * Hz, Hz));
        Assert.True(b.Take(1, 60 * Hz, Hz) > 0);
    }

    [Fact]
    public void Property_a_sender_that_waits_as_told_never_exceeds_burst_plus_rate_times_time()
    {
        Gen.Select(Gen.Long[1, 1L << 30], Gen.Long[1, 1L << 24], Gen.Long[0, 1L << 22].Array[1, 60],
            Gen.Long[0, Hz].Array[60]).Sample((rate, burst, chunks, gaps) =>
        {
            var b = new TokenBucket(rate, burst);
            long now = 0;
            long sent = 0;
            for (var i = 0; i < chunks.Length; i++)
            {
                now += gaps[i];
                now += b.Take(chunks[i], now, Hz);
                sent += chunks[i];
                // Waiting as told pays the debt: the chunk that just went counts too.
                var allowed = burst + (double)rate * now / Hz;
                Assert.True(sent <= allowed + 1, $"{sent} bytes by {now} µs, bound {allowed}");
            }
        }, iter: 2_000);
    }

    [Fact]
    public void Property_a_steady_sender_gets_the_rate_over_the_long_run()
    {
        Gen.Select(Gen.Long[1_000, 1L << 30], Gen.Long[1, 1L << 20]).Sample((rate, chunk) =>
        {
            var b = new TokenBucket(rate, chunk);
            long now = 0;
            const int n = 200;
            for (var i = 0; i < n; i++) now += b.Take(chunk, now, Hz);
            // n chunks, the first free: (n-1) chunks at the rate, to within a tick per step.
            var expected = (double)(n - 1) * chunk / rate * Hz;
            Assert.InRange(now, expected - n, expected + n);
        }, iter: 1_000);
    }
}
