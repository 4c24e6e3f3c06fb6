using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Capsule.Cli;
using Capsule.Protos;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Lab;

public static partial class Bench
{
    static Command DrainBench()
    {
        var counts = new Option<int[]>("--capsules")
        {
            Description = "Capsule counts on the drained host (1-32 each)", DefaultValueFactory = _ => [2, 4],
            AllowMultipleArgumentsPerToken = true,
        };
        var parallel = new Option<int[]>("--parallel")
        {
            Description = "Parallelisms to compare (1-16 each); 1, the sequential drain, is always measured",
            DefaultValueFactory = _ => [2], AllowMultipleArgumentsPerToken = true,
        };
        var c = new Command("drain",
            "Time to drain a host against the number of capsules and the parallelism, sequential as the baseline")
        {
            counts, parallel, CommandTree.JsonOption,
        };
        c.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            // Its own lab unless one is named: a lab in use is never taken down under its user.
            var named = pr.GetResult(CommandTree.LabOption) is { Implicit: false };
            var lab = named ? pr.GetValue(CommandTree.LabOption)! : DrainBenchRun.LabName;
            return DrainBenchRun.RunAsync(lab, pr.GetValue(counts)!, pr.GetValue(parallel)!,
                pr.GetValue(CommandTree.JsonOption), ct);
        }));
        return c;
    }

    /// <summary>One drain: N capsules, P at once; SpeedUp: the sequential drain's time over this one's.</summary>
    internal sealed record DrainRow(int Capsules, int Parallel, double Seconds, double PerCapsuleSeconds,
        double SpeedUp, long Bytes);

    /// <summary>
    /// `capsule bench drain`: a lab of three hosts; for each capsule count N, N capsules on h1 (each a stream.py
    /// server holding 16 MB, so a move carries some memory), then `drain h1 --to h2 h3` at each parallelism,
    /// timed from the Drain call until the agent reports the drain done. Sequential (parallel 1) is measured in
    /// the same run as the baseline. Between runs the capsules are removed and h1 uncordoned. The lab is removed
    /// at the end whatever happens.
    /// </summary>
    internal static class DrainBenchRun
    {
        public const string LabName = "drainbench";
        const int BallastMb = 16;

        public static async Task<int> RunAsync(string labName, int[] counts, int[] parallels, bool json,
            CancellationToken ct)
        {
            if (counts.Length == 0 || counts.Any(n => n is < 1 or > 32))
                throw new UserError("--capsules takes counts between 1 and 32");
            if (parallels.Any(p => p is < 1 or > 16)) throw new UserError("--parallel takes values between 1 and 16");
            Action<string> step = json ? m => Console.Error.WriteLine("• " + m) : Output.Step;
            var session = LabContext.Session(labName);
            var lab = new LabRunner(session.Paths, step);
            if (lab.Exists)
            {
                if (labName != LabName) throw new UserError($"lab '{labName}' is up; name a lab that is not");
                step($"removing a previous '{LabName}' lab");
                await lab.DownAsync(ct);
            }
            try
            {
                step("building a lab of three hosts");
                await lab.UpAsync(3, ct);
                var rows = new List<DrainRow>();
                foreach (var n in counts)
                {
                    double? baseline = null;
                    foreach (var p in parallels.Prepend(1).Distinct())
                    {
                        var (seconds, bytes) = await MeasureAsync(session, n, p, step, ct);
                        baseline ??= seconds;
                        rows.Add(new DrainRow(n, p, seconds, seconds / n, baseline.Value / seconds, bytes));
                    }
                }
                Print(rows, json);
                return 0;
            }
            finally
            {
                step($"removing the '{labName}' lab");
                await lab.DownAsync(CancellationToken.None);
            }
        }

        static async Task<(double Seconds, long Bytes)> MeasureAsync(Session s, int n, int parallel,
            Action<string> step, CancellationToken ct)
        {
            var names = Enumerable.Range(1, n).Select(i => $"b{i}").ToList();
            var stream = Path.Combine(AppContext.BaseDirectory, "tools", "stream.py");
            for (var i = 0; i < n; i++)
                await s.CreateAsync(names[i], "h1", ["python3", stream, "server", $"{7900 + i}", $"{BallastMb}"], ct);
            foreach (var name in names)
                if ((await MigrateBench.WaitForLog(s, name, "h1", "LISTENING", TimeSpan.FromSeconds(30), ct))
                    is { Line: null } w)
                    throw new TimeoutException($"{name} did not start listening: {w.Error}");
            step($"draining {n} capsules off h1, {parallel} at once");
            var (_, agent) = await s.AgentAsync("h1", ct);
            try
            {
                var clock = Stopwatch.StartNew();
                var request = new DrainRequest { Parallel = parallel, To = { "h2", "h3" } };
                await agent.DrainAsync(request, cancellationToken: ct);
                using var watch = agent.DrainStatus(new DrainStatusRequest { Follow = true }, cancellationToken: ct);
                DrainReport? last = null;
                await foreach (var r in watch.ResponseStream.ReadAllAsync(ct)) last = r;
                var seconds = clock.Elapsed.TotalSeconds;
                if (last is not { State: DrainState.Done })
                    throw new InvalidOperationException($"the drain of {n} capsules ended {last?.State}: " +
                        string.Join("; ", last?.Items.Where(i => i.Error.Length > 0).Select(i => i.Error) ?? []));
                return (seconds, last.Items.Sum(i => i.Bytes));
            }
            finally
            {
                foreach (var name in names) await RemoveAsync(s, name, ct);
                var open = new CordonRequest { Cordoned = false };
                await agent.CordonAsync(open, cancellationToken: CancellationToken.None);
            }
        }

        static async Task RemoveAsync(Session s, string name, CancellationToken ct)
        {
            try
            {
                var (_, agent) = await s.CapsuleAsync(name, ct);
                await agent.RemoveAsync(new NameRequest { Name = name }, cancellationToken: ct);
            }
            catch (Exception e) when (e is UserError or RpcException) { } // already gone
        }

        static void Print(List<DrainRow> rows, bool json)
        {
            if (json)
            {
                Output.WriteJson(new DrainBenchJson(BallastMb, rows), LabJson.Default.DrainBenchJson);
                return;
            }
            var t = Output.Table("CAPSULES", "PARALLEL", "DRAIN S", "S PER CAPSULE", "VS SEQUENTIAL", "MOVED MB");
            foreach (var r in rows)
                t.AddRow(N(r.Capsules), N(r.Parallel), F(r.Seconds), F(r.PerCapsuleSeconds), $"{F(r.SpeedUp)}x",
                    F(r.Bytes / 1048576.0));
            AnsiConsole.Write(t);
            Console.Out.WriteLine("drain: h1 → h2, h3 (placement by capsule count); each capsule a stream.py " +
                $"server holding {BallastMb} MB; VS SEQUENTIAL: the parallel-1 drain's time over this one's, same run");
        }

        static string N(int v) => v.ToString(CultureInfo.InvariantCulture);
        static string F(double v) => v.ToString("F2", CultureInfo.InvariantCulture);
    }
}
