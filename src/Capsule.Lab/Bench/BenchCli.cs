using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Capsule.Cli;
using Spectre.Console;

namespace Capsule.Lab;

/// <summary>`capsule bench cli`'s numbers for `--json`: one row per command, in milliseconds.</summary>
internal sealed record CliBenchJson(int Runs, string Floor, double FloorP50Ms, List<CliBenchRowJson> Commands);

internal sealed record CliBenchRowJson(string Command, double P50Ms, double P90Ms, int? GoalMs, double OverFloor);

public static partial class Bench
{
    static Command CliSpeed()
    {
        var runs = new Option<int>("--runs")
        {
            Description = "How many timed runs of each command (1-200), after one unreported warm-up run",
            DefaultValueFactory = _ => 15,
        };
        var c = new Command("cli",
            "How fast the CLI answers, as a user runs it (the real binary, started anew each time): --help, ls, " +
            "stats, exec, create and rm, p50/p90 against their goals and against starting /bin/true")
        {
            runs, CommandTree.JsonOption,
        };
        c.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            // Its own lab unless one is named: a lab in use is never taken down under its user.
            var named = pr.GetResult(CommandTree.LabOption) is { Implicit: false };
            var lab = named ? pr.GetValue(CommandTree.LabOption)! : CliBench.LabName;
            return CliBench.RunAsync(lab, pr.GetValue(runs), pr.GetValue(CommandTree.JsonOption), ct);
        }));
        return c;
    }

    /// <summary>
    /// `capsule bench cli`: a lab of two hosts with one capsule (c on h1, sleeping), then each command
    /// started N times as a separate process, the way a person or a script starts it, its output read
    /// and thrown away. Every command must succeed (a failing one is no speed). The floor is starting
    /// /bin/true the same way: what any command costs here before it does anything, so "over floor"
    /// says how many such starts a command is worth. `ip netns list` is shown beside it as a small
    /// native tool that reads a little state. The lab is removed at the end whatever happens.
    /// </summary>
    static class CliBench
    {
        public const string LabName = "clibench";
        const string Host = "h1";
        const string CapsuleName = "c";

        sealed record Case(string Label, int? GoalMs, Func<int, string[][]> Steps);

        public static async Task<int> RunAsync(string labName, int runs, bool json, CancellationToken ct)
        {
            if (runs is < 1 or > 200) throw new UserError("--runs must be between 1 and 200");
            if (LabPaths.NameError(labName) is { } e) throw new UserError(e);
            Action<string> step = json ? m => Console.Error.WriteLine("• " + m) : Output.Step;
            var self = Environment.ProcessPath ?? throw new UserError("cannot tell where this program lives");
            string[] Cap(params string[] args) => [self, "--lab", labName, .. args];

            var lab = new LabRunner(new LabPaths(labName), step);
            if (lab.Exists)
            {
                if (labName != LabName) throw new UserError($"lab '{labName}' is up; name a lab that is not");
                step($"removing a previous '{labName}' lab");
                await lab.DownAsync(ct);
            }
            try
            {
                step("building a lab of two hosts");
                await lab.UpAsync(2, ct);
                await RunOnceAsync(Cap("create", CapsuleName, "--host", Host, "--", "sleep", "infinity"), ct);
                Case[] cases =
                [
                    new("/bin/true (floor)", null, _ => [["/bin/true"]]),
                    new("ip netns list", null, _ => [["ip", "netns", "list"]]),
                    new("capsule --help", 100, _ => [[self, "--help"]]),
                    new("capsule ls", 100, _ => [Cap("ls")]),
                    new("capsule stats h1", 100, _ => [Cap("stats", Host)]),
                    new($"capsule exec {CapsuleName} -- true", null, _ => [Cap("exec", CapsuleName, "--", "true")]),
                    // One capsule made and removed per run; create and rm are timed apart.
                    new("capsule create", 300,
                        i => [Cap("create", $"b{i}", "--host", "h2", "--", "sleep", "infinity")]),
                    new("capsule rm", null, i => [Cap("rm", $"b{i}")]),
                ];
                var times = cases.ToDictionary(c => c.Label, _ => new List<double>());
                for (var i = 0; i <= runs; i++)
                {
                    ct.ThrowIfCancellationRequested();
                    if (i == 0) step($"one warm-up run, then {runs} timed runs of each command");
                    foreach (var c in cases)
                        foreach (var argv in c.Steps(i))
                        {
                            var ms = await RunOnceAsync(argv, ct);
                            if (i > 0) times[c.Label].Add(ms);
                        }
                }
                Report(cases, times, runs, json);
                return 0;
            }
            finally
            {
                step($"removing the '{labName}' lab");
                await lab.DownAsync(CancellationToken.None);
            }
        }

        /// <summary>Starts one command, reads its output, waits for it: the milliseconds a user waits.</summary>
        static async Task<double> RunOnceAsync(string[] argv, CancellationToken ct)
        {
            var psi = new ProcessStartInfo(argv[0])
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            foreach (var a in argv.Skip(1)) psi.ArgumentList.Add(a);
            var clock = Stopwatch.StartNew();
            using var p = Process.Start(psi) ?? throw new UserError($"could not start {argv[0]}");
            var stdout = p.StandardOutput.ReadToEndAsync(ct);
            var stderr = p.StandardError.ReadToEndAsync(ct);
            await p.WaitForExitAsync(ct);
            await stdout;
            var err = await stderr;
            var ms = clock.Elapsed.TotalMilliseconds;
            if (p.ExitCode != 0)
                throw new UserError($"`{string.Join(' ', argv)}` failed (exit {p.ExitCode}): {err.Trim()}");
            return ms;
        }

        static double Percentile(List<double> xs, double q)
        {
            var sorted = xs.Order().ToList();
            return sorted[Math.Max(0, (int)Math.Ceiling(q * sorted.Count) - 1)];
        }

        static void Report(Case[] cases, Dictionary<string, List<double>> times, int runs, bool json)
        {
            var floor = Percentile(times[cases[0].Label], 0.5);
            var rows = cases.Select(c => new CliBenchRowJson(c.Label, Math.Round(Percentile(times[c.Label], 0.5), 1),
                Math.Round(Percentile(times[c.Label], 0.9), 1), c.GoalMs,
                Math.Round(Percentile(times[c.Label], 0.5) / floor, 1))).ToList();
            if (json)
            {
                Output.WriteJson(new CliBenchJson(runs, cases[0].Label, Math.Round(floor, 1), rows),
                    LabJson.Default.CliBenchJson);
                return;
            }
            var t = Output.Table("COMMAND", "P50 ms", "P90 ms", "GOAL ms", "x FLOOR", "");
            for (var i = 1; i <= 4; i++) t.Columns[i].RightAligned();
            foreach (var r in rows)
                t.AddRow(Markup.Escape(r.Command), F(r.P50Ms), F(r.P90Ms), r.GoalMs?.ToString() ?? "",
                    F(r.OverFloor), r.GoalMs is not { } g ? "" : r.P50Ms <= g ? "[green]met[/]" : "[red]missed[/]");
            AnsiConsole.Write(t);
            Console.WriteLine($"{runs} timed runs each, every one a new process whose output was read; " +
                "x FLOOR: p50 over the p50 of starting /bin/true the same way");
        }

        static string F(double x) => x.ToString("F1", CultureInfo.InvariantCulture);
    }
}
