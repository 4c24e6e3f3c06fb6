namespace Capsule.Core;

/// <summary>
/// A rate as people write it (`migrate --bandwidth 50M`): a size per second in <see cref="ByteSize"/>'s binary
/// units, with or without a trailing "/s" (50M and 50M/s are both 50 MiB/s). Zero and less are refused: no
/// limit is said by leaving the option out.
/// </summary>
public static class ByteRate
{
    public static long? Parse(string text)
    {
        var s = text.Trim();
        if (s.EndsWith("/s", StringComparison.OrdinalIgnoreCase)) s = s[..^2];
        return ByteSize.Parse(s) is > 0 and var n ? n : null;
    }
}

/// <summary>
/// A token bucket over bytes: at most <c>burst + rate × t</c> bytes pass in any span of t seconds. A caller takes
/// the bytes it is about to send and waits the time it is told; the bucket goes into debt rather than splitting
/// a chunk, so a chunk larger than the burst still passes, and the next caller waits for it. Pure: the caller
/// passes the time (any monotonic clock with its ticks per second), so the arithmetic is tested without sleeping.
/// Safe for several senders at once.
/// </summary>
public sealed class TokenBucket
{
    readonly long _rate;
    readonly long _burst;
    readonly Lock _gate = new();
    double _tokens;
    long _last;
    bool _started;

    /// <param name="bytesPerSecond">The long-run rate; must be positive.</param>
    /// <param name="burst">Bytes that may pass at once after an idle spell; at least 1.</param>
    public TokenBucket(long bytesPerSecond, long burst)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerSecond, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(burst, 1);
        _rate = bytesPerSecond;
        _burst = burst;
        _tokens = burst;
    }

    public long BytesPerSecond => _rate;

    /// <summary>
    /// Takes <paramref name="bytes"/> at time <paramref name="now"/> (in ticks of
    /// <paramref name="ticksPerSecond"/>); returns how many of those ticks to wait before sending them.
    /// </summary>
    public long Take(long bytes, long now, long ticksPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        lock (_gate)
        {
            if (_started && now > _last)
                _tokens = Math.Min(_burst, _tokens + (double)(now - _last) / ticksPerSecond * _rate);
            if (!_started || now > _last) _last = now;
            _started = true;
            _tokens -= bytes;
            if (_tokens >= 0) return 0;
            return (long)Math.Ceiling(-_tokens / _rate * ticksPerSecond);
        }
    }
}
