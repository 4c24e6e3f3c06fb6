using System.CommandLine;
using Capsule.Protos;
using Capsule.Rpc;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>`capsule suspend`, `resume` and `inspect`: a capsule parked in one file and revived on any host.</summary>
public static class SuspendCommands
{
    public static IEnumerable<Command> Build()
    {
        {
            var name = new Argument<string>("name") { Description = "Capsule to suspend" };
            var to = new Option<string>("--to") { Description = "File to write (must not exist)", Required = true };
            var cmd = new Command("suspend",
                "Freeze a capsule into one file and remove it from its host; its locator stays reserved")
            {
                name, to, CommandTree.JsonOption
            };
            cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var (c, agent) = await s.CapsuleAsync(pr.GetValue(name)!, ct);
                var file = Path.GetFullPath(pr.GetValue(to)!);
                var r = await agent.SuspendAsync(new SuspendRequest { Name = c.Name, File = file },
                    cancellationToken: ct);
                if (pr.GetValue(CommandTree.JsonOption))
                    Output.WriteJson(new SuspendJson(c.Name, r.File, r.Bytes, r.Processes, r.Connections, r.Peers,
                        new SuspendPhasesJson(r.Times.SyncMs, r.Times.DumpMs, r.Times.TransferMs, r.Times.TotalMs)),
                        CliJson.Default.SuspendJson);
                else
                    Console.WriteLine($"capsule {c.Name} suspended to {r.File} ({r.Bytes / 1024.0:F0} KiB, " +
                        $"{r.Processes} processes, {r.Connections} connections) in {r.Times.TotalMs} ms; " +
                        $"locator {c.Locator} stays reserved, {r.Peers} peer host(s) hold its packets " +
                        "until it resumes");
                return 0;
            }));
            yield return cmd;
        }
        {
            var file = new Argument<string>("file") { Description = "A file written by `capsule suspend`" };
            var on = new Option<string>("--on") { Description = "Host to resume it on, e.g. h2", Required = true };
            var cmd = new Command("resume", "Check a suspend file and restore its capsule on a host")
            {
                file, on, CommandTree.JsonOption
            };
            cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var path = Path.GetFullPath(pr.GetValue(file)!);
                if (!File.Exists(path)) throw new UserError($"no such file: {path}");
                var (_, agent) = await s.AgentAsync(pr.GetValue(on)!, ct);
                var r = await agent.ResumeAsync(new ResumeRequest { File = path }, cancellationToken: ct);
                if (pr.GetValue(CommandTree.JsonOption))
                    Output.WriteJson(new ResumeJson(r.Name, r.Locator, r.Host, r.Pid, r.RestoreMs, r.TotalMs, r.Flushed,
                        r.Dropped), CliJson.Default.ResumeJson);
                else
                    Console.WriteLine($"capsule {r.Name} resumed on {r.Host} at {r.Locator} (pid {r.Pid}) " +
                        $"in {r.TotalMs} ms; {r.Flushed} held packets delivered, {r.Dropped} dropped while it slept");
                return 0;
            }));
            yield return cmd;
        }
        {
            var file = new Argument<string>("file") { Description = "A file written by `capsule suspend`" };
            var cmd = new Command("inspect", "Show what a suspend file holds, without restoring it")
            {
                file, CommandTree.JsonOption
            };
            cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var path = Path.GetFullPath(pr.GetValue(file)!);
                SuspendMeta meta;
                try { meta = await SuspendFile.ReadMetaAsync(path, verify: true, ct); }
                catch (Exception e) when (e is InvalidDataException or FileNotFoundException)
                {
                    throw new UserError(e.Message);
                }
                var size = new FileInfo(path).Length;
                if (pr.GetValue(CommandTree.JsonOption))
                {
                    Output.WriteJson(new InspectJson(meta, size, "ok"), CliJson.Default.InspectJson);
                    return 0;
                }
                var t = Output.Table("", "");
                t.AddRow("capsule", Markup.Escape(meta.Name));
                t.AddRow("locator", meta.Locator);
                t.AddRow("suspended",
                    $"{meta.Created:yyyy-MM-dd HH:mm:ss} UTC from {Markup.Escape(meta.SuspendedFrom)}");
                t.AddRow("size", $"{size / 1024.0:F0} KiB (checksum ok, format {meta.Format})");
                t.AddRow("command", Markup.Escape(string.Join(' ', meta.Command)));
                t.AddRow("processes",
                    Markup.Escape(string.Join('\n', meta.Processes.Select(p => $"{p.Pid,5}  {p.Command}"))));
                t.AddRow("connections",
                    Markup.Escape(meta.Connections.Count == 0 ? "none" : string.Join('\n', meta.Connections)));
                AnsiConsole.Write(t);
                return 0;
            }));
            yield return cmd;
        }
    }
}
