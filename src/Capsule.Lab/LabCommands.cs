using System.CommandLine;
using Capsule.Agent.Linux;
using Capsule.Cli;

namespace Capsule.Lab;

public static class LabCommands
{
    public static Command Build()
    {
        var lab = new Command("lab", "Simulated hosts on this machine, each a network namespace with its own agent");

        var hosts = new Option<int>("--hosts")
            { Description = "How many hosts (h1..hN)", DefaultValueFactory = _ => 2 };
        var legacy = new Option<int>("--legacy")
        {
            Description = "How many ordinary hosts (l1..lM, no Capsule software) behind a gateway",
            DefaultValueFactory = _ => 0
        };
        var directory = new Option<string>("--directory")
        {
            Description = "The directory: embedded (one process) or etcd (a cluster of real etcd members)",
            DefaultValueFactory = _ => "embedded",
        };
        directory.AcceptOnlyFromAmong("embedded", "etcd");
        var etcdMembers = new Option<int>("--etcd-members")
        {
            Description = "With --directory etcd: how many members (on h1..hN), at most the number of hosts",
            DefaultValueFactory = _ => 3,
        };
        var up = new Command("up",
            "Create the lab: underlay segment, directory, hosts h1..hN with an agent each, " +
            "ordinary hosts behind a gateway")
        {
            hosts, legacy, directory, etcdMembers
        };
        up.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var paths = LabContext.LabOf(pr);
            var runner = new LabRunner(paths, Output.Step);
            var etcd = pr.GetValue(directory) == "etcd";
            var members = Math.Min(pr.GetValue(etcdMembers), pr.GetValue(hosts));
            if (pr.GetResult(etcdMembers) is { Implicit: false } && !etcd)
                throw new UserError("--etcd-members goes with --directory etcd");
            var choice = etcd ? new LabRunner.DirectoryChoice(true, pr.GetResult(etcdMembers) is { Implicit: false }
                ? pr.GetValue(etcdMembers) : members) : LabRunner.DirectoryChoice.Embedded;
            var record = await runner.UpAsync(pr.GetValue(hosts), ct, pr.GetValue(legacy), choice);
            var names = record.Hosts.Select(h => $"{h.Name} ({h.Underlay})")
                .Concat(record.Legacy.Select(l => $"{l.Name} ({l.Address})"));
            Console.WriteLine($"lab '{paths.Name}' is up: {string.Join(", ", names)}");
            Console.WriteLine($"its context '{paths.Name}' is in {ClientConfig.FilePath} " +
                $"(`--lab {paths.Name}` or `--context {paths.Name}` picks it)");
            return 0;
        }));

        var down = new Command("down", "Remove every namespace, link, process and file the lab made");
        down.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var paths = LabContext.LabOf(pr);
            await new LabRunner(paths, Output.Step).DownAsync(ct);
            Console.WriteLine($"lab '{paths.Name}' is down");
            return 0;
        }));

        var host = new Argument<string>("host") { Description = "Simulated host, e.g. h1" };
        var cmd = new Argument<string[]>("command")
            { Description = "Command to run (after --)", Arity = ArgumentArity.OneOrMore };
        var exec = new Command("exec", "Run a command on a simulated host or ordinary host (in its network namespace)")
        {
            host, cmd
        };
        exec.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var paths = LabContext.LabOf(pr);
            var ns = paths.HostNetns(pr.GetValue(host)!);
            if (!Netns.Exists(ns)) throw new UserError($"no host '{pr.GetValue(host)}' in lab '{paths.Name}'");
            return await Terminal.RunAttachedAsync("nsenter", [$"--net={Netns.Dir}/{ns}", "--", .. pr.GetValue(cmd)!],
                ct);
        }));

        var which = new Argument<string[]>("hosts")
            { Description = "Hosts to restart (all when none is named)", Arity = ArgumentArity.ZeroOrMore };
        var restart = new Command("restart",
            "Restart simulated hosts as a reboot would: their processes and capsules end, their disks and the " +
            "directory stay")
        {
            which
        };
        restart.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var paths = LabContext.LabOf(pr);
            await new LabRunner(paths, Output.Step).RestartAsync(pr.GetValue(which) ?? [], ct);
            Console.WriteLine("restarted");
            return 0;
        }));

        lab.Subcommands.Add(up);
        lab.Subcommands.Add(restart);
        lab.Subcommands.Add(down);
        lab.Subcommands.Add(exec);
        return lab;
    }
}
