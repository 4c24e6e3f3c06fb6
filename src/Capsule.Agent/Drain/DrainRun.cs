using System.Diagnostics;
using Capsule.Protos;

namespace Capsule.Agent.Drain;

/// <summary>
/// One drain of this host: its capsules in the order they move, each one's target, phase and numbers, and the
/// drain's state. Shared by the loop that moves them and the callers that watch; every change is under one lock
/// and wakes the watchers.
/// </summary>
internal sealed class DrainRun(string host, int parallel, long bandwidth)
{
    sealed class Item(string capsule, string? target)
    {
        public string Capsule { get; } = capsule;
        public string? Target { get; set; } = target;
        public string Phase { get; set; } = Waiting;
        public long Bytes { get; set; }
        public long TotalMs { get; set; }
        public string Error { get; set; } = "";
        public Stopwatch? Clock { get; set; }

        /// <summary>The transfer under way, as its move last reported it (null between transfers).</summary>
        public MigrateProgress? Transfer { get; set; }
    }

    public const string Waiting = "waiting";
    public const string Moved = "moved";
    public const string Failed = "failed";

    readonly object _lock = new();
    readonly List<Item> _items = [];
    readonly Stopwatch _clock = Stopwatch.StartNew();
    TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string Host => host;
    public int Parallel => parallel;
    public long Bandwidth => bandwidth;
    public DrainState State { get; private set; } = DrainState.Running;
    public bool Stopping => State != DrainState.Running;

    /// <summary>Completes at the next change (a watcher waits on it, then reads a fresh report).</summary>
    public Task Changed
    {
        get { lock (_lock) return _changed.Task; }
    }

    public void Add(string capsule, string? target, string? why) => Change(() =>
    {
        var item = new Item(capsule, target);
        if (target is null) (item.Phase, item.Error) = (Failed, why ?? "no host can take it");
        _items.Add(item);
    });

    /// <summary>The next capsule to move and its target, or null when none waits (or the drain stops).</summary>
    public (string Capsule, string Target)? Next()
    {
        lock (_lock)
        {
            if (Stopping) return null;
            var next = _items.FirstOrDefault(i => i.Phase == Waiting);
            if (next is null) return null;
            next.Phase = "starting";
            next.Clock = Stopwatch.StartNew();
            Signal();
            return (next.Capsule, next.Target!);
        }
    }

    /// <summary>A move's report: a new phase, or a transfer's bytes, rate and time left within one.</summary>
    public void Progress(string capsule, MigrateProgress p) => Change(() =>
    {
        var i = Find(capsule);
        if (p.BytesTotal > 0)
        {
            i.Transfer = p;
            return;
        }
        i.Phase = p.Phase;
        i.Transfer = null;
    });

    public void Ended(string capsule, MigrateResult? result, string? error) => Change(() =>
    {
        var i = Find(capsule);
        i.TotalMs = i.Clock?.ElapsedMilliseconds ?? 0;
        if (result is not null) i.Bytes = result.ImageBytes + result.StagedBytes + result.PostCopyBytes;
        i.Phase = result is { Ok: true } ? Moved : Failed;
        i.Error = error ?? result?.Error ?? "";
    });

    public void Stop() => Change(() =>
    {
        if (State == DrainState.Running) State = DrainState.Stopping;
    });

    /// <summary>The loop has ended: no move runs any more.</summary>
    public void Finish() => Change(() =>
    {
        State = _items.All(i => i.Phase == Moved) ? DrainState.Done
            : State == DrainState.Stopping && _items.Any(i => i.Phase == Waiting) ? DrainState.Stopped
            : DrainState.Failed;
        _clock.Stop();
    });

    public bool Ended() => State is DrainState.Done or DrainState.Stopped or DrainState.Failed;

    Item Find(string capsule) => _items.First(i => i.Capsule == capsule);

    void Change(Action a)
    {
        lock (_lock)
        {
            a();
            Signal();
        }
    }

    void Signal()
    {
        _changed.TrySetResult();
        _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public DrainReport Report(bool cordoned)
    {
        lock (_lock)
        {
            var done = _items.Where(i => i.Phase == Moved).ToList();
            // Time left is guessed from the moves that ended: each new one takes as long as they did on average.
            var average = done.Count > 0 ? (long)done.Average(i => i.TotalMs) : -1;
            var r = new DrainReport
            {
                Host = host, State = State, Parallel = parallel, ElapsedMs = _clock.ElapsedMilliseconds,
                Moved = done.Count, Failed = _items.Count(i => i.Phase == Failed), Cordoned = cordoned,
            };
            foreach (var i in _items) r.Items.Add(ItemReport(i, average));
            var running = r.Items.Where(i => i.Phase is not (Waiting or Moved or Failed)).ToList();
            var waiting = _items.Count(i => i.Phase == Waiting);
            r.LeftMs = Ended() ? 0
                : average < 0 ? -1
                : (waiting + parallel - 1) / parallel * average + running.Select(i => i.LeftMs).DefaultIfEmpty(0).Max();
            return r;
        }
    }

    static DrainItem ItemReport(Item i, long average)
    {
        var elapsed = i.Phase is Moved or Failed ? i.TotalMs : i.Clock?.ElapsedMilliseconds ?? 0;
        var left = i.Phase is Moved or Failed ? 0
            : average < 0 ? -1
            : Math.Max(0, average - elapsed);
        // Within a transfer its own numbers say more than the average of the moves done.
        if (i.Transfer is { } t && i.Phase is not (Moved or Failed))
        {
            return new DrainItem
            {
                Capsule = i.Capsule, Target = i.Target ?? "", Phase = t.Phase, Bytes = t.BytesDone, Error = i.Error,
                ElapsedMs = elapsed, LeftMs = t.EtaMs > 0 ? t.EtaMs : left, BytesPerSecond = t.Rate,
            };
        }
        return new DrainItem
        {
            Capsule = i.Capsule, Target = i.Target ?? "", Phase = i.Phase, Bytes = i.Bytes, Error = i.Error,
            ElapsedMs = elapsed, LeftMs = left,
            BytesPerSecond = i.TotalMs > 0 ? i.Bytes * 1000.0 / i.TotalMs : 0,
        };
    }
}
