using System.Diagnostics;
using Capsule.Core;
using Capsule.Dir;

namespace Capsule.Lab;

public static partial class Bench
{
    /// <summary>
    /// Watchers that keep a translation table as an agent does (a whole state built, each change
    /// applied with <see cref="TranslationTable.With"/>) and time how long a probe change takes to show
    /// in their table: from just before the writer's update to the first table that routes the
    /// capsule to its new host.
    /// </summary>
    sealed class DirectoryWatchers(IReadOnlyList<IDirectory> clients, IReadOnlyList<string> selves)
    {
        /// <summary>What the current probe expects: the capsule's locator routed to this underlay.</summary>
        sealed record Probe(int Id, Locator Capsule, string Host, Locator Underlay, long Start);

        readonly int[] _seen = new int[clients.Count];
        readonly List<double>[] _latencies = [.. clients.Select(_ => new List<double>())];
        readonly TaskCompletionSource[] _first = [.. clients.Select(_ => new TaskCompletionSource(
            TaskCreationOptions.RunContinuationsAsynchronously))];
        volatile Probe? _probe;
        TaskCompletionSource _all = new(TaskCreationOptions.RunContinuationsAsynchronously);
        int _pending;

        public IEnumerable<double> Latencies => _latencies.SelectMany(l => l);
        public Task FirstStates => Task.WhenAll(_first.Select(f => f.Task));

        public Task[] Start(CancellationToken ct) =>
            [.. Enumerable.Range(0, clients.Count).Select(i => Task.Run(() => WatchAsync(i, ct), ct))];

        async Task WatchAsync(int i, CancellationToken ct)
        {
            TranslationTable? table = null;
            try
            {
                await foreach (var u in clients[i].WatchAsync(ct))
                {
                    table = u.Full || table is null ? TranslationTable.From(u.State, selves[i])
                        : table.With(u.State, u.Changes, selves[i]);
                    _first[i].TrySetResult();
                    if (_probe is { } p && _seen[i] < p.Id && Shows(table, p, selves[i]))
                    {
                        _latencies[i].Add(Stopwatch.GetElapsedTime(p.Start).TotalMilliseconds);
                        _seen[i] = p.Id;
                        if (Interlocked.Decrement(ref _pending) == 0) _all.TrySetResult();
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        }

        static bool Shows(TranslationTable t, Probe p, string self) =>
            p.Host == self ? t.IsLocal(p.Capsule) : t.TryRoute(p.Capsule, out var h) && h == p.Underlay;

        /// <summary>
        /// Makes one change (the capsule to <paramref name="to"/>) and waits until every watcher's table
        /// shows it, for at most <paramref name="timeout"/>; returns how many never did.
        /// </summary>
        public async Task<int> ChangeAsync(int id, IDirectory writer, CapsuleRecord c, HostRecord to,
            TimeSpan timeout, CancellationToken ct)
        {
            _all = new(TaskCreationOptions.RunContinuationsAsynchronously);
            Volatile.Write(ref _pending, clients.Count);
            _probe = new Probe(id, c.Locator, to.Name, to.Underlay, Stopwatch.GetTimestamp());
            await writer.UpdateAsync(c.Name, to.Name, CapsuleState.Running, c.Revision, ct: ct);
            var done = await Task.WhenAny(_all.Task, Task.Delay(timeout, ct));
            return done == _all.Task ? 0 : Volatile.Read(ref _pending);
        }
    }
}
