using System.CommandLine;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Spectre.Console;

namespace Capsule.Cli;

public static class CapsuleCommands
{
    static Argument<string> NameArg() => new("name") { Description = "Capsule name" };
    static Argument<string[]> CommandArg() =>
        new("command") { Description = "Command to run (after --)", Arity = ArgumentArity.OneOrMore };

    internal static string? SuspendedFile(string? detail) =>
        detail?.Split(' ').FirstOrDefault(p => p.StartsWith("file=", StringComparison.Ordinal))?[5..];

    public static IEnumerable<Command> Build()
    {
        {
            var name = NameArg();
            var host = new Option<string>("--host") { Description = "Host to create it on, e.g. h1", Required = true };
            var udp = new Option<string>("--udp-policy")
            {
                Description = "While it moves, its peers' UDP datagrams are held (buffer, up to the hold bound) " +
                    "or dropped and counted (drop)",
                DefaultValueFactory = _ => "buffer"
            };
            udp.AcceptOnlyFromAmong("buffer", "drop");
            var rootfs = new Option<string>("--rootfs")
            {
                Description = "Run it as a container: its own user namespace (its root is not the host's) and mount " +
                    "namespace, on its own writable layer over this folder (/ for the host's file system, which " +
                    "must then be the same on every host it moves to)",
            };
            rootfs.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<string>() is { } v && !Path.IsPathFullyQualified(v))
                    r.AddError($"--rootfs takes an absolute path (got '{v}'); use / for the host's file system");
            });
            var memory = new Option<string>("--memory")
            {
                Description = "Most memory it may use, e.g. 256M or 2G (with --rootfs)",
            };
            memory.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<string>() is { } v && ByteSize.Parse(v) is not > 0)
                    r.AddError($"--memory takes a size such as 256M or 2G (got '{v}')");
            });
            var cpus = new Option<double?>("--cpus") { Description = "Most CPU time it may use, in CPUs, e.g. 0.5" };
            cpus.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<double?>() is { } v && v is not (>= 0.001 and <= 4096))
                    r.AddError($"--cpus takes a number of CPUs from 0.001 up, such as 0.5 or 2 (got {v})");
            });
            var pids = new Option<uint?>("--pids") { Description = "Most processes and threads it may have at once" };
            pids.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<uint?>() is 0) r.AddError("--pids takes a number of at least 1");
            });
            var command = CommandArg();
            var create = new Command("create",
                "Create a capsule: a locator from the directory, its own namespaces, CMD as its first process")
            {
                name, host, udp, rootfs, memory, cpus, pids, command, CommandTree.JsonOption
            };
            create.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var (_, agent) = await s.AgentAsync(pr.GetValue(host)!, ct);
                var req = new CreateRequest
                {
                    Name = pr.GetValue(name)!, UdpDrop = pr.GetValue(udp) == "drop", Rootfs = pr.GetValue(rootfs) ?? "",
                };
                var limits = new Limits
                {
                    MemoryBytes = pr.GetValue(memory) is { } m ? ByteSize.Parse(m)!.Value : 0,
                    CpuMillis = pr.GetValue(cpus) is { } c ? (uint)Math.Round(c * 1000) : 0,
                    Pids = pr.GetValue(pids) ?? 0,
                };
                if (limits.MemoryBytes > 0 || limits.CpuMillis > 0 || limits.Pids > 0)
                {
                    if (req.Rootfs.Length == 0)
                        throw new UserError("--memory, --cpus and --pids need --rootfs (e.g. --rootfs /)");
                    req.Limits = limits;
                }
                req.Command.AddRange(pr.GetValue(command)!);
                var info = await agent.CreateAsync(req, cancellationToken: ct);
                if (pr.GetValue(CommandTree.JsonOption))
                    Output.WriteJson(new CreatedJson(info.Name, info.Locator, info.Host, info.Pid),
                        CliJson.Default.CreatedJson);
                else
                    Console.WriteLine(
                        $"capsule {info.Name} is running on {info.Host} at {info.Locator} (pid {info.Pid})");
                return 0;
            }));
            yield return create;
        }
        {
            var name = NameArg();
            var command = CommandArg();
            var exec = new Command("exec",
                "Run a command inside a capsule (its network, PID, UTS, IPC and mount namespaces, and its user " +
                "namespace and root if it has its own); returns its exit code")
            {
                name, command
            };
            exec.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var (c, agent) = await s.CapsuleAsync(pr.GetValue(name)!, ct);
                var info = await agent.GetAsync(new NameRequest { Name = c.Name }, cancellationToken: ct);
                if (info.Pid == 0)
                    throw new UserError(
                        $"capsule '{c.Name}' is not running ({info.State.ToString().ToLowerInvariant()})");
                // A capsule with its own user namespace: entered as its root, in its root file system.
                string[] ns = info.RootFs is null
                    ? ["--net", "--pid", "--uts", "--ipc", "--mount"]
                    : ["--all", "--root", "--wd"];
                string[] enter = ["nsenter", "-t", info.Pid.ToString(), .. ns, "--", .. pr.GetValue(command)!];
                if (info.Cgroups.Count == 0) return await Terminal.RunAttachedAsync(enter[0], enter[1..], ct);
                // Within its limits too: the shell joins its cgroups, then becomes nsenter.
                const string join = """n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || """ +
                    """exit 125; shift; n=$((n-1)); done; exec "$@" """;
                return await Terminal.RunAttachedAsync("sh",
                    ["-c", join, "sh", info.Cgroups.Count.ToString(), .. info.Cgroups, .. enter], ct);
            }));
            yield return exec;
        }
        {
            var ls = new Command("ls", "List capsules: name, locator, host, state")
            {
                CommandTree.JsonOption, ListCapsules.WideOption
            };
            ls.SetAction((pr, ct) => CommandTree.Run(() => ListCapsules.RunAsync(CommandTree.SessionOf(pr),
                pr.GetValue(CommandTree.JsonOption), pr.GetValue(ListCapsules.WideOption), ct)));
            yield return ls;
        }
        {
            var name = NameArg();
            var rm = new Command("rm", "Stop a capsule's processes, remove its namespaces and release its locator")
            {
                name
            };
            rm.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var (c, agent) = await s.CapsuleAsync(pr.GetValue(name)!, ct);
                if (c.State == Core.CapsuleState.Suspended)
                {
                    // Nothing runs anywhere: give the locator back and let every holder drop what it kept.
                    await s.Directory.ReleaseAsync(c.Name, ct);
                    await s.ReleaseHoldsAsync(c.Locator, Core.Locator.None, ct);
                    Console.WriteLine($"suspended capsule {c.Name} removed; locator {c.Locator} released, " +
                        $"its file ({c.Detail}) can no longer be resumed");
                    return 0;
                }
                await agent.RemoveAsync(new NameRequest { Name = c.Name }, cancellationToken: ct);
                Console.WriteLine($"capsule {c.Name} removed; locator {c.Locator} released");
                return 0;
            }));
            yield return rm;
        }
        {
            var name = NameArg();
            var stderr = new Option<bool>("--stderr")
                { Description = "Show standard error instead of standard output" };
            var logs = new Command("logs", "Print what a capsule wrote to its standard output (or --stderr)")
            {
                name, stderr
            };
            logs.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var (c, agent) = await s.CapsuleAsync(pr.GetValue(name)!, ct);
                var r = await agent.LogsAsync(new LogsRequest { Name = c.Name, Stderr = pr.GetValue(stderr) },
                    cancellationToken: ct);
                using var stdout = Console.OpenStandardOutput();
                r.Data.WriteTo(stdout);
                return 0;
            }));
            yield return logs;
        }
        {
            var host = new Argument<string>("host") { Description = "Host, e.g. h1" };
            var stats = new Command("stats", "Data-plane counters of a host: packets, bytes, and drops by reason")
            {
                host, CommandTree.JsonOption
            };
            stats.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var (_, agent) = await s.AgentAsync(pr.GetValue(host)!, ct);
                var r = await agent.StatsAsync(new Empty(), cancellationToken: ct);
                if (pr.GetValue(CommandTree.JsonOption))
                {
                    Output.WriteJson(new StatsJson(r.Host, r.Capsules, r.Routes,
                        r.Counters.ToDictionary(c => c.Name, c => c.Value),
                        r.Drops.ToDictionary(c => c.Name, c => c.Value)), CliJson.Default.StatsJson);
                    return 0;
                }
                Console.WriteLine($"host {r.Host}: {r.Capsules} local capsules, {r.Routes} remote routes");
                var t = Output.Table("COUNTER", "VALUE");
                foreach (var c in r.Counters) t.AddRow(c.Name, c.Value.ToString("N0"));
                foreach (var c in r.Drops) t.AddRow("drop " + c.Name, c.Value.ToString("N0"));
                AnsiConsole.Write(t);
                return 0;
            }));
            yield return stats;
        }
    }
}
