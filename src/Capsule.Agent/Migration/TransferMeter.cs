using System.Diagnostics;
using Capsule.Core;
using Capsule.Protos;

namespace Capsule.Agent.Migration;

/// <summary>
/// The bytes one move sends to its target (the files sent ahead, the memory, the image): paced by
/// `migrate --bandwidth` (one <see cref="TokenBucket"/> for every stream of the move, so the rate bounds their
/// sum), and reported while a stream lasts longer than a second: bytes sent, of how many, the rate over the
/// last half second and the time left at that rate.
/// </summary>
internal sealed class TransferMeter
{
    static readonly TimeSpan Quiet = TimeSpan.FromSeconds(1);
    static readonly TimeSpan Every = TimeSpan.FromMilliseconds(500);

    readonly TokenBucket? _bucket;
    readonly Func<MigrateProgress, Task> _report;
    long _done;

    /// <param name="bytesPerSecond">0: no limit.</param>
    public TransferMeter(long bytesPerSecond, Func<MigrateProgress, Task> report)
    {
        // A tenth of a second's worth may go at once: the pace holds at the scale of the 1 MiB chunks.
        if (bytesPerSecond > 0) _bucket = new TokenBucket(bytesPerSecond, Math.Max(bytesPerSecond / 10, 1));
        _report = report;
    }

    public static TransferMeter None { get; } = new(0, _ => Task.CompletedTask);

    /// <summary>Counts <paramref name="bytes"/> about to be sent, and waits as long as the limit says first.</summary>
    public async ValueTask SendingAsync(int bytes, CancellationToken ct)
    {
        Interlocked.Add(ref _done, bytes);
        if (_bucket is null) return;
        var wait = _bucket.Take(bytes, Stopwatch.GetTimestamp(), Stopwatch.Frequency);
        if (wait > 0) await Task.Delay(TimeSpan.FromSeconds((double)wait / Stopwatch.Frequency), ct);
    }

    /// <summary>
    /// Reports the stream of <paramref name="phase"/> (about <paramref name="total"/> bytes) every half second once
    /// it has lasted a second, until the returned handle is disposed.
    /// </summary>
    public IAsyncDisposable Watch(string phase, long total)
    {
        var stop = new CancellationTokenSource();
        var start = Interlocked.Read(ref _done);
        var loop = ReportAsync(phase, start, Math.Max(total, 1), stop.Token);
        return new Watching(stop, loop);
    }

    async Task ReportAsync(string phase, long start, long total, CancellationToken stop)
    {
        try
        {
            // The first report's rate is over the quiet second: the stream's own start.
            var clock = Stopwatch.StartNew();
            var lastBytes = 0L;
            var lastTime = TimeSpan.Zero;
            await Task.Delay(Quiet, stop);
            using var timer = new PeriodicTimer(Every);
            do
            {
                var done = Interlocked.Read(ref _done) - start;
                var now = clock.Elapsed;
                var seconds = Math.Max((now - lastTime).TotalSeconds, 0.001);
                var rate = (long)((done - lastBytes) / seconds);
                (lastBytes, lastTime) = (done, now);
                // Past the estimate (memory can exceed the resident size): the total is what has gone so far.
                var all = Math.Max(total, done);
                await _report(new MigrateProgress
                {
                    Phase = phase, BytesDone = done, BytesTotal = all, Rate = rate,
                    EtaMs = rate > 0 ? (all - done) * 1000 / rate : -1,
                });
            }
            while (await timer.WaitForNextTickAsync(stop));
        }
        catch (OperationCanceledException) { }
    }

    sealed class Watching(CancellationTokenSource stop, Task loop) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await stop.CancelAsync();
            await loop;
            stop.Dispose();
        }
    }
}
