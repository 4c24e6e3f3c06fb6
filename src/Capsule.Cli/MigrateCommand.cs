using System.CommandLine;
using Capsule.Core;
using Capsule.Protos;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>`capsule migrate NAME --to HOST`: a live migration, with its phases shown as they happen.</summary>
public static class MigrateCommand
{
    public static Command Build()
    {
        var name = new Argument<string>("name") { Description = "Capsule to move" };
        var to = new Option<string>("--to") { Description = "Host to move it to, e.g. h3", Required = true };
        var hold = new Option<int>("--hold-packets")
        {
            Description = "Per-capsule hold bound at each host while it moves (packets; newest dropped when full)",
            DefaultValueFactory = _ => Rpc.ApiDefaults.HoldPackets
        };
        var memory = new Option<string>("--memory")
        {
            Description = "stop-and-copy: all memory moves while the capsule is frozen, and a failure leaves it " +
                "where it was; post-copy: it resumes on the target first and its memory follows (a shorter freeze " +
                "for a big capsule, but a failure then loses it; docs/migration.md)",
            DefaultValueFactory = _ => StopAndCopy,
        };
        memory.AcceptOnlyFromAmong(StopAndCopy, PostCopy);
        var bandwidth = new Option<string?>("--bandwidth")
        {
            Description = "Most bytes a second the move may send to the target (its files, memory and image), " +
                "e.g. 50M = 50 MiB/s; K, M, G are binary units, \"/s\" may follow (default: no limit)",
        };
        var report = new Option<bool>("--report")
        {
            Description = "Print each TCP and UDP connection of the capsule: its peer, packets held and flushed, " +
                "the longest stall, whether it was paused with a zero window, and whether it survived",
        };
        var cmd = new Command("migrate", "Move a running capsule to another host; its connections stay open")
        {
            name, to, hold, memory, bandwidth, report, CommandTree.JsonOption
        };
        cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            if (pr.GetValue(hold) is < 16 or > 1_000_000)
                throw new UserError("--hold-packets must be between 16 and 1000000");
            var rate = pr.GetValue(bandwidth) is { } text
                ? ByteRate.Parse(text) ?? throw new UserError(
                    $"--bandwidth '{text}' is not a rate: a positive size a second, e.g. 500K, 50M or 1G")
                : 0;
            var s = CommandTree.SessionOf(pr);
            var (c, agent) = await s.CapsuleAsync(pr.GetValue(name)!, ct);
            var json = pr.GetValue(CommandTree.JsonOption);
            using var call = agent.Migrate(new MigrateRequest
            {
                Name = c.Name, Target = pr.GetValue(to)!, HoldPackets = pr.GetValue(hold),
                Memory = pr.GetValue(memory) == PostCopy ? MemoryMode.PostCopy : MemoryMode.StopAndCopy,
                Bandwidth = rate,
            }, cancellationToken: ct);
            var result = await MigrateDisplay.FollowAsync(call.ResponseStream.ReadAllAsync(ct), json);
            if (result is null) throw new UserError("the source agent ended the migration without a result");
            if (json)
            {
                Output.WriteJson(Summary(c.Name, result, rate), CliJson.Default.MigrateJson);
                return result.Ok ? 0 : 1;
            }
            Print(c.Name, result);
            if (pr.GetValue(report) && result.Ok) MigrateDisplay.PrintReport(result);
            return result.Ok ? 0 : 1;
        }));
        return cmd;
    }

    const string StopAndCopy = "stop-and-copy";
    const string PostCopy = "post-copy";

    internal static string MemoryName(MemoryMode m) => m == MemoryMode.PostCopy ? PostCopy : StopAndCopy;

    internal static MigrateJson Summary(string name, MigrateResult r, long bandwidth = 0) => new(
        name, r.Ok, r.Error.Length > 0 ? r.Error : null, r.ResumedOnSource, r.Host, r.Pid, MemoryName(r.Memory),
        new PhasesJson(r.Times.StageMs, r.Times.SyncMs, r.Times.DumpMs, r.Times.TransferMs, r.Times.RestoreMs,
            r.Times.FlushMs, r.Times.TotalMs, r.Times.FreezeMs, r.Times.PostCopyTailMs),
        r.ImageBytes, r.StagedBytes, r.PostCopyBytes, r.Peers, r.Held, r.Flushed, r.Dropped, r.Unaccounted,
        r.UdpBytesLostAtFreeze, r.ClosingConnectionsLost, bandwidth, [.. r.Flows.Select(FlowJson.From)]);

    static void Print(string name, MigrateResult r)
    {
        if (!r.Ok)
        {
            Output.Error($"migration of {name} failed: {r.Error}");
            Console.Error.WriteLine(r.ResumedOnSource
                ? $"capsule {name} was resumed on {r.Host}, its connections intact"
                : $"capsule {name} may need attention on {r.Host}");
            return;
        }
        var t = Output.Table("PHASE", "MS", "", "");
        t.AddRow("stage", r.Times.StageMs.ToString(), "files sent ahead", $"{r.StagedBytes / 1024.0:F0} KiB");
        t.AddRow("sync", r.Times.SyncMs.ToString(), "image at the freeze", $"{r.ImageBytes / 1024.0:F0} KiB");
        t.AddRow("freeze+dump", r.Times.DumpMs.ToString(), "peers holding", r.Peers.ToString());
        t.AddRow("transfer", r.Times.TransferMs.ToString(), "packets held", r.Held.ToString());
        t.AddRow("restore", r.Times.RestoreMs.ToString(), "flushed", r.Flushed.ToString());
        t.AddRow("flush", r.Times.FlushMs.ToString(), "dropped (hold full)", r.Dropped.ToString());
        if (r.Memory == MemoryMode.PostCopy)
            t.AddRow("post-copy tail", r.Times.PostCopyTailMs.ToString(), "pages after the resumption",
                $"{r.PostCopyBytes / 1024.0:F0} KiB");
        t.AddRow("frozen", r.Times.FreezeMs.ToString(), "memory", MemoryName(r.Memory));
        t.AddRow("[bold]total[/]", $"[bold]{r.Times.TotalMs}[/]", "sent before the cut, not seen",
            r.Unaccounted.ToString());
        AnsiConsole.Write(t);
        Console.WriteLine(r.Error.Length == 0
            ? $"capsule {name} now runs on {r.Host} (pid {r.Pid}); nothing of it is left on the old host"
            : $"capsule {name} now runs on {r.Host} (pid {r.Pid})");
        if (r.Error.Length > 0) Output.Error("warning: " + r.Error);
    }
}
