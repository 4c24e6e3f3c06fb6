using Capsule.Agent.Events;
using Capsule.Agent.Migration;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.Drain;

/// <summary>
/// `capsule drain HOST`, run by HOST's own agent (docs/drain.md): it cordons the host, plans where each capsule
/// goes (<see cref="Placement"/>), then moves them, at most N at once, each through the same
/// <see cref="MigrationRunner"/> as `capsule migrate`. It runs in the background: the CLI that started it may go;
/// status and events show it. A stop starts no further move; draining again plans the capsules left anew.
/// </summary>
internal sealed partial class Drainer(AgentOptions options, CapsuleRuntime runtime, IDirectory directory,
    DataPlaneHost dataPlane, MigrationRunner migrations, EventLog events, HostLoads loads, ILogger<Drainer> log)
{
    public const int DefaultParallel = 2;
    public const int MaxParallel = 16;

    readonly SemaphoreSlim _gate = new(1, 1);
    DrainRun? _run;

    public DrainRun? Current => Volatile.Read(ref _run);
    public HostLoads Loads => loads;

    public async Task<DrainReport> StartAsync(DrainRequest req, CancellationToken ct)
    {
        var parallel = req.Parallel == 0 ? DefaultParallel : req.Parallel;
        if (parallel is < 1 or > MaxParallel)
            throw new ArgumentException($"parallel must be between 1 and {MaxParallel} (got {req.Parallel})");
        if (req.BandwidthBytesPerSecond < 0) throw new ArgumentException("bandwidth must not be negative");
        await _gate.WaitAsync(ct);
        try
        {
            if (Current is { } now && !now.Ended())
                throw new InvalidOperationException(now.State == DrainState.Running
                    ? $"{options.Host} is already draining; see `capsule drain {options.Host} --status`"
                    : $"{options.Host} is stopping its drain (moves under way finish); drain again once it stopped");
            var state = await directory.SnapshotAsync(ct);
            var targets = Targets(state, req.To);
            await SetCordonAsync(true, ct);
            var run = new DrainRun(options.Host, parallel, req.BandwidthBytesPerSecond);
            await PlanAsync(run, targets, ct);
            Volatile.Write(ref _run, run);
            events.DrainStarted(runtime.All.Count);
            LogStarted(log, runtime.All.Count, parallel);
            _ = Task.Run(() => RunAsync(run), CancellationToken.None);
            return run.Report(cordoned: true);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>The hosts it may move to: those named (each must exist and may take capsules), or all others.</summary>
    List<HostRecord> Targets(DirectoryState state, IEnumerable<string> named)
    {
        var names = named.ToList();
        foreach (var n in names)
        {
            if (!state.Hosts.TryGetValue(n, out var h)) throw new ArgumentException($"no host named '{n}'");
            if (n == options.Host) throw new ArgumentException($"{n} is the host being drained");
            if (h.IsGateway) throw new ArgumentException($"{n} is a gateway; capsules run on hosts");
            if (h.Cordoned) throw new ArgumentException(DirectoryState.CordonedError(n, "it cannot take any"));
        }
        var all = state.Hosts.Values.Where(h => h.Name != options.Host && !state.Unreachable.Contains(h.Name));
        return names.Count > 0 ? names.Select(n => state.Hosts[n]).ToList() : all.ToList();
    }

    async Task PlanAsync(DrainRun run, List<HostRecord> targets, CancellationToken ct)
    {
        var loads = await Task.WhenAll(targets.Select(h => HostLoads.OfAsync(h, ct)));
        var capsules = runtime.All.Select(c => new PlacementItem(c.Name, HostLoads.TreeMemory(c.Pid)));
        foreach (var choice in Placement.Plan(loads, options.Host, capsules))
            run.Add(choice.Capsule, choice.Host, choice.Why);
    }

    /// <summary>Takes the next capsule whenever fewer than N move; ends once none waits and all have ended.</summary>
    async Task RunAsync(DrainRun run)
    {
        var moving = new List<Task>();
        while (true)
        {
            moving.RemoveAll(t => t.IsCompleted);
            if (moving.Count >= run.Parallel)
            {
                await Task.WhenAny(moving);
                continue;
            }
            if (run.Next() is not { } next) break;
            moving.Add(MoveAsync(run, next.Capsule, next.Target));
        }
        await Task.WhenAll(moving);
        run.Finish();
        var r = run.Report(cordoned: true);
        events.DrainEnded(r);
        LogEnded(log, r.State.ToString(), r.Moved, r.Failed, r.ElapsedMs);
    }

    async Task MoveAsync(DrainRun run, string capsule, string target)
    {
        var request = new MigrateRequest
        {
            Name = capsule, Target = target, Memory = MemoryMode.StopAndCopy, Bandwidth = run.Bandwidth,
        };
        try
        {
            var result = await migrations.RunAsync(request, p =>
            {
                run.Progress(capsule, p);
                return Task.CompletedTask;
            });
            run.Ended(capsule, result, null);
        }
        catch (RpcException e)
        {
            run.Ended(capsule, null, e.Status.Detail);
        }
        catch (Exception e)
        {
            // Nothing may end the drain's loop unseen: the capsule is marked failed with what happened.
            LogMoveThrew(log, capsule, e.Message);
            run.Ended(capsule, null, e.Message);
        }
    }

    public DrainReport Stop()
    {
        var run = Current ?? throw new InvalidOperationException($"{options.Host} is not draining");
        run.Stop();
        return run.Report(Cordoned());
    }

    public DrainReport Report() =>
        Current?.Report(Cordoned()) ?? new DrainReport { Host = options.Host, Cordoned = Cordoned(), LeftMs = -1 };

    /// <summary>As the directory's watch last showed this host (a cordon just set shows within moments).</summary>
    bool Cordoned() => dataPlane.State?.Hosts.GetValueOrDefault(options.Host)?.Cordoned ?? false;

    /// <summary>Cordons or opens this host in the directory: its own record with the flag set.</summary>
    public async Task SetCordonAsync(bool cordoned, CancellationToken ct)
    {
        if (!cordoned && Current is { } run && !run.Ended())
            throw new InvalidOperationException($"{options.Host} is draining; stop the drain " +
                $"(`capsule drain {options.Host} --stop`) and let it end before uncordoning");
        var me = (await directory.SnapshotAsync(ct)).Hosts.GetValueOrDefault(options.Host)
            ?? throw new InvalidOperationException($"{options.Host} is not in the directory");
        await directory.PutHostAsync(me with { Cordoned = cordoned }, ct);
        LogCordon(log, cordoned ? "cordoned" : "uncordoned");
    }

    [LoggerMessage(EventId = 1400, Level = LogLevel.Information,
        Message = "draining this host: {Capsules} capsules, at most {Parallel} moves at once")]
    static partial void LogStarted(ILogger logger, int capsules, int parallel);

    [LoggerMessage(EventId = 1401, Level = LogLevel.Information,
        Message = "drain ended ({State}): {Moved} moved, {Failed} failed, in {Ms} ms")]
    static partial void LogEnded(ILogger logger, string state, int moved, int failed, long ms);

    [LoggerMessage(EventId = 1402, Level = LogLevel.Error, Message = "drain: the move of {Capsule} threw: {Error}")]
    static partial void LogMoveThrew(ILogger logger, string capsule, string error);

    [LoggerMessage(EventId = 1403, Level = LogLevel.Information, Message = "this host is now {Word}")]
    static partial void LogCordon(ILogger logger, string word);
}
