using System.CommandLine;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>
/// `capsule context ls|use|set|rm`: the named clusters this CLI talks to, kept in the client config file
/// (<see cref="ClientConfig"/>), as kubectl keeps contexts in a kubeconfig.
/// </summary>
public static class ContextCommands
{
    public static Command Build()
    {
        var context = new Command("context",
            "Named ways to reach a cluster (a directory endpoint, agent overrides), kept in the client config");
        context.Subcommands.Add(List());
        context.Subcommands.Add(Use());
        context.Subcommands.Add(Set());
        context.Subcommands.Add(Remove());
        return context;
    }

    static Command List()
    {
        var cmd = new Command("ls", "List the contexts; * marks the current one") { CommandTree.JsonOption };
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            var config = ClientConfig.Read();
            if (pr.GetValue(CommandTree.JsonOption))
            {
                Output.WriteJson(config, ClientConfigJson.Default.ClientConfigFile);
                return Task.FromResult(0);
            }
            if (config.Contexts.Count == 0)
            {
                Console.WriteLine($"no contexts in {ClientConfig.FilePath}; `capsule lab up` writes a lab's, " +
                    "`capsule context set NAME --directory ENDPOINT` a cluster's");
                return Task.FromResult(0);
            }
            var t = Output.Table("", "NAME", "DIRECTORY", "AGENTS");
            foreach (var c in config.Contexts)
            {
                var agents = c.Agents.Select(a => $"{a.Key}={a.Value}").ToList();
                if (c.AgentSockets is { } dir) agents.Add($"sockets in {dir}");
                var via = agents.Count == 0 ? "as advertised" : string.Join('\n', agents);
                t.AddRow(c.Name == config.Current ? "*" : "", Markup.Escape(c.Name + (c.Lab ? " (lab)" : "")),
                    Markup.Escape(c.Directory), Markup.Escape(via));
            }
            AnsiConsole.Write(t);
            return Task.FromResult(0);
        }));
        return cmd;
    }

    static Command Use()
    {
        var name = new Argument<string>("name") { Description = "The context to use when none is named" };
        var cmd = new Command("use", "Make a context the current one") { name };
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            var n = pr.GetValue(name)!;
            ClientConfig.Update(f =>
            {
                if (f.Find(n) is null)
                    throw new UserError($"no context named '{n}'; contexts: " +
                        (f.Contexts.Count == 0 ? "none" : string.Join(", ", f.Contexts.Select(c => c.Name))));
                f.Current = n;
                return true;
            });
            Console.WriteLine($"current context: {n}");
            return Task.FromResult(0);
        }));
        return cmd;
    }

    static Command Set()
    {
        var name = new Argument<string>("name") { Description = "The context's name, e.g. prod" };
        var directory = new Option<string>("--directory")
        {
            Description = "The directory: etcd:HOST:2379[,HOST:2379...], http(s)://HOST:7472 or unix:/PATH",
            Required = true,
        };
        var agent = new Option<string[]>("--agent")
        {
            Description = "Reach a host's agent at another endpoint than it advertises: HOST=ENDPOINT (repeatable)",
            AllowMultipleArgumentsPerToken = false,
        };
        var sockets = new Option<string>("--agent-sockets")
            { Description = "A folder of unix sockets HOST.sock through which agents are reached when present" };
        var use = new Option<bool>("--use") { Description = "Also make it the current context" };
        var credentials = new Credentials();
        var cmd = new Command("set", "Add a context, or replace the one of that name")
        {
            name, directory, agent, sockets, use,
        };
        credentials.AddTo(cmd);
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            var context = Parse(pr.GetValue(name)!, pr.GetValue(directory)!, pr.GetValue(agent) ?? [],
                pr.GetValue(sockets)) with
            {
                Ca = FullPath(pr.GetValue(credentials.Ca)), Cert = FullPath(pr.GetValue(credentials.Cert)),
                Key = FullPath(pr.GetValue(credentials.Key)),
            };
            CheckCredentials(context);
            ClientConfig.Update(f =>
            {
                f.Put(context);
                if (pr.GetValue(use)) f.Current = context.Name;
                return true;
            });
            Console.WriteLine($"context {context.Name} written to {ClientConfig.FilePath}");
            return Task.FromResult(0);
        }));
        return cmd;
    }

    /// <summary>A context from the command line, every part checked before anything is written.</summary>
    internal static ClientContext Parse(string name, string directory, IEnumerable<string> agents, string? sockets)
    {
        if (ClientConfig.NameError(name) is { } e) throw new UserError(e);
        if (ClientConfig.EndpointError(directory) is { } d) throw new UserError("--directory: " + d);
        var map = new Dictionary<string, string>();
        foreach (var a in agents)
        {
            var eq = a.IndexOf('=');
            if (eq <= 0) throw new UserError($"--agent '{a}': give HOST=ENDPOINT, e.g. h1=http://10.0.0.11:7471");
            var endpoint = a[(eq + 1)..];
            var isEtcd = endpoint.StartsWith("etcd:", StringComparison.Ordinal);
            if (ClientConfig.EndpointError(endpoint) is not null || isEtcd)
                throw new UserError($"--agent '{a}': an agent's endpoint is http(s)://HOST:PORT or unix:/PATH");
            map[a[..eq]] = endpoint;
        }
        if (sockets is not null && !Directory.Exists(sockets))
            throw new UserError($"--agent-sockets: no folder {sockets}");
        return new ClientContext(name, directory)
        {
            Agents = map,
            AgentSockets = sockets is null ? null : Path.GetFullPath(sockets),
        };
    }

    static string? FullPath(string? path) => path is null ? null : Path.GetFullPath(path);

    /// <summary>All three of --ca, --cert, --key or none; and they must load, so a typo shows now, not later.</summary>
    static void CheckCredentials(ClientContext c)
    {
        if (c.Ca is null && c.Cert is null && c.Key is null) return;
        if (c.Ca is null || c.Cert is null || c.Key is null)
            throw new UserError("give --ca, --cert and --key together (`capsule operator add` writes the three files)");
        try
        {
            using var _ = Trust.TlsIdentity.Load(c.Ca, c.Cert, c.Key);
        }
        catch (Trust.TrustException e)
        {
            throw new UserError(e.Message);
        }
    }

    static Command Remove()
    {
        var name = new Argument<string>("name") { Description = "The context to remove" };
        var cmd = new Command("rm", "Remove a context (a lab's goes with `lab down` anyway)") { name };
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            var n = pr.GetValue(name)!;
            ClientConfig.Update(f =>
            {
                if (f.Contexts.RemoveAll(c => c.Name == n) == 0) throw new UserError($"no context named '{n}'");
                if (f.Current == n) f.Current = null;
                return true;
            });
            Console.WriteLine($"context {n} removed");
            return Task.FromResult(0);
        }));
        return cmd;
    }
}
