using System.CommandLine;
using Capsule.Protos;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>`capsule hosts`, `capsule cordon HOST`, `capsule uncordon HOST` (docs/drain.md).</summary>
public static class HostCommands
{
    public static IEnumerable<Command> Build()
    {
        yield return Hosts();
        yield return Cordon("cordon", true, "Take no new capsule on a host (created or moved) until uncordoned");
        yield return Cordon("uncordon", false, "Let a cordoned (drained) host take capsules again");
    }

    static Command Hosts()
    {
        var cmd = new Command("hosts", "List hosts: underlay, role, capsules, and whether cordoned")
            { CommandTree.JsonOption };
        cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var state = await CommandTree.SessionOf(pr).Directory.SnapshotAsync(ct);
            var rows = state.Hosts.Values.Select(h => new HostRowJson(h.Name, h.Underlay.ToString(),
                h.IsGateway ? "gateway" : "host", h.Cordoned, state.Unreachable.Contains(h.Name),
                state.Capsules.Values.Count(c => c.Host == h.Name && c.State != Core.CapsuleState.Suspended)))
                .ToList();
            if (pr.GetValue(CommandTree.JsonOption))
            {
                Output.WriteJson(rows, DrainCliJson.Default.ListHostRowJson);
                return 0;
            }
            var t = Output.Table("NAME", "UNDERLAY", "ROLE", "CAPSULES", "STATE");
            foreach (var r in rows)
                t.AddRow(r.Name, r.Underlay, r.Role, r.Capsules.ToString(),
                    r.Unreachable ? "[red]unreachable[/]" : r.Cordoned ? "[yellow]cordoned[/]" : "ready");
            AnsiConsole.Write(t);
            return 0;
        }));
        return cmd;
    }

    static Command Cordon(string verb, bool cordoned, string description)
    {
        var host = new Argument<string>("host") { Description = "Host name, e.g. h1" };
        var cmd = new Command(verb, description) { host };
        cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var (h, agent) = await CommandTree.SessionOf(pr).AgentAsync(pr.GetValue(host)!, ct);
            await agent.CordonAsync(new CordonRequest { Cordoned = cordoned }, cancellationToken: ct);
            Console.Out.WriteLine(cordoned
                ? $"{h.Name} is cordoned: no capsule is created on it or moved to it until `capsule uncordon {h.Name}`"
                : $"{h.Name} takes capsules again");
            return 0;
        }));
        return cmd;
    }
}
