using System.CommandLine;
using System.Diagnostics;
using Capsule.Cli;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Dir.Etcd;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    static Command DirectoryBench()
    {
        var watchers = new Option<int>("--watchers")
            { Description = "Watchers, each keeping a table as an agent does (2-200)", DefaultValueFactory = _ => 100 };
        var capsules = new Option<int>("--capsules")
            { Description = "Capsules in the directory (1-50000)", DefaultValueFactory = _ => 10_000 };
        var changes = new Option<int>("--changes")
            { Description = "Location changes timed, one after another (1-2000)", DefaultValueFactory = _ => 200 };
        var c = new Command("directory",
            "How fast a capsule's new location reaches every watcher's table: the embedded directory and etcd, "
            + "with many watchers and capsules")
        {
            watchers, capsules, changes, CommandTree.JsonOption,
        };
        c.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var (w, n, k) = (pr.GetValue(watchers), pr.GetValue(capsules), pr.GetValue(changes));
            if (w is < 2 or > 200) throw new UserError("--watchers must be between 2 and 200");
            if (n is < 1 or > 50_000) throw new UserError("--capsules must be between 1 and 50000");
            if (k is < 1 or > 2000) throw new UserError("--changes must be between 1 and 2000");
            if (LabEtcdMissing() is { } missing) throw new UserError(missing);
            var rows = new List<DirectoryRow>();
            await using (var embedded = await BenchStores.EmbeddedAsync(Seed(w, n), ct))
                rows.Add(await MeasureAsync("embedded", embedded, w, k, ct));
            await using (var etcd = await BenchStores.EtcdAsync(Seed(w, n), ct))
                rows.Add(await MeasureAsync("etcd", etcd, w, k, ct));
            PrintDirectory(rows, w, n, k, pr.GetValue(CommandTree.JsonOption));
            return 0;
        }));
        return c;
    }

    static string? LabEtcdMissing() => Lab.LabEtcd.Missing();

    /// <summary>
    /// One host per watcher (h1..hW), the capsules spread over them and running: built by the pure
    /// rules, then handed to each store whole (a state file; an etcd import), which takes seconds
    /// where ten thousand single allocations would take minutes and measure nothing of interest here.
    /// </summary>
    static DirectoryState Seed(int hosts, int capsules)
    {
        var s = new DirectoryState(Prefix.Parse("100.64.0.0/16"));
        for (var i = 1; i <= hosts; i++)
        {
            var underlay = Locator.Parse($"198.18.{i / 250}.{i % 250 + 1}");
            s = s.PutHost(new HostRecord($"h{i}", underlay, $"unix:/h{i}")).State;
        }
        for (var i = 0; i < capsules; i++)
        {
            var name = $"c{i}";
            var host = $"h{i % hosts + 1}";
            s = s.AllocateCapsule(name, host).State;
            s = s.UpdateCapsule(name, host, CapsuleState.Running, s.Capsules[name].Revision).State;
        }
        return s;
    }

    internal sealed record DirectoryRow(string Directory, int Samples, int Missed, double P50, double P99, double Max,
        double CpuUsPerChangePerWatcher, double KbPerWatcher, double WriteP50);

    static async Task<DirectoryRow> MeasureAsync(string name, BenchStores.Store store, int watchers, int changes,
        CancellationToken ct)
    {
        Output.Step($"{name}: {watchers} watchers take the whole state");
        GC.Collect();
        var heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        var clients = Enumerable.Range(0, watchers).Select(_ => store.Open()).ToList();
        var selves = Enumerable.Range(1, watchers).Select(i => $"h{i}").ToList();
        var w = new DirectoryWatchers(clients, selves);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var tasks = w.Start(stop.Token);
        await w.FirstStates.WaitAsync(TimeSpan.FromSeconds(120), ct);
        var heap = (GC.GetTotalMemory(forceFullCollection: true) - heapBefore) / 1024.0 / watchers;

        Output.Step($"{name}: {changes} location changes, each awaited at every watcher");
        var writer = store.Open();
        var state = await writer.SnapshotAsync(ct);
        var hosts = state.Hosts.Values.ToList();
        var missed = 0;
        var writes = new List<double>();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        for (var i = 1; i <= changes; i++)
        {
            var c = await writer.ReadAsync($"c{i * 7919 % state.Capsules.Count}", ct);
            var to = hosts[(hosts.FindIndex(h => h.Name == c.Host) + 1) % hosts.Count]; // always another host
            var clock = Stopwatch.StartNew();
            missed += await w.ChangeAsync(i, writer, c, to, TimeSpan.FromSeconds(10), ct);
            writes.Add(clock.Elapsed.TotalMilliseconds);
        }
        var used = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMicroseconds;
        await stop.CancelAsync();
        await Task.WhenAll(tasks).ContinueWith(_ => { });
        var l = w.Latencies.Order().ToArray();
        double Rank(double p) => l.Length == 0 ? double.NaN : l[Math.Max(0, (int)Math.Ceiling(p * l.Length) - 1)];
        var sortedWrites = writes.Order().ToArray();
        return new DirectoryRow(name, l.Length, missed, Rank(0.5), Rank(0.99), l.Length == 0 ? double.NaN : l[^1],
            used / changes / watchers, heap, sortedWrites[sortedWrites.Length / 2]);
    }

    static void PrintDirectory(List<DirectoryRow> rows, int watchers, int capsules, int changes, bool json)
    {
        if (json)
        {
            var doc = new DirectoryBenchJson(watchers, capsules, changes, rows);
            Output.WriteJson(doc, LabJson.Default.DirectoryBenchJson);
            return;
        }
        // Short headings: the table fits 80 columns. Latencies in ms; CPU per change per watcher; heap per watcher.
        var t = Output.Table("store", "samples", "missed", "p50", "p99", "max", "p99 ratio", "p99<50ms", "CPU µs",
            "heap KB");
        var baseline = rows[0].P99;
        foreach (var r in rows)
            t.AddRow(r.Directory, r.Samples.ToString(), r.Missed.ToString(), $"{r.P50:0.0}", $"{r.P99:0.0}",
                $"{r.Max:0.0}", $"{r.P99 / baseline:0.00}x", r.P99 < 50 && r.Missed == 0 ? "met" : "NOT met",
                $"{r.CpuUsPerChangePerWatcher:0}", $"{r.KbPerWatcher:0}");
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 120; // a log or a pipe: no terminal to fit
        AnsiConsole.MarkupLine($"[bold]Directory: a location change to every watcher's table[/] " +
            $"({watchers} watchers, {capsules} capsules, {changes} changes)");
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine("[grey]Latency in ms from the start of the write to the watcher's table showing it; "
            + "ratio against the embedded directory in this run. Watchers run in this one process, each with a "
            + "connection of its own, as agents have; CPU µs is this process's per change per watcher (watchers and "
            + "writer), heap KB its managed heap per watcher after the first states.[/]");
    }
}
