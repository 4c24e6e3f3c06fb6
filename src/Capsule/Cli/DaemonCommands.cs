using System.CommandLine;
using Capsule.Agent;
using Capsule.Core;
using Capsule.DataPlane;
using Capsule.Dir;
using Capsule.Lab;

namespace Capsule.Cli;

/// <summary>
/// The daemons: `capsule agent` (capsuled, one per host) and `capsule directory` (the embedded directory).
/// </summary>
internal static class DaemonCommands
{
    public static IEnumerable<Command> Build()
    {
        var pidFile = new Option<string?>("--pid-file") { Description = "Write the process id here while running" };
        {
            var host = new Option<string>("--host") { Required = true, Description = "This host's name" };
            var underlay = new Option<string>("--underlay")
                { Required = true, Description = "This host's underlay IPv4 address" };
            var port = new Option<int>("--port")
                { DefaultValueFactory = _ => Wire.DefaultPort, Description = "UDP port for host-to-host traffic" };
            var mtu = new Option<int>("--underlay-mtu")
                { DefaultValueFactory = _ => 1500, Description = "MTU of the underlay path" };
            var directory = new Option<string>("--directory")
                { Required = true, Description = "Directory endpoint (unix:/path or http://host:port)" };
            var listen = new Option<string>("--listen")
                { Required = true, Description = "Where to serve the agent API (unix:/path or http://addr:port)" };
            var state = new Option<string>("--state") { Required = true, Description = "This host's state folder" };
            var prefix = new Option<string>("--netns-prefix")
                { DefaultValueFactory = _ => "capsule", Description = "Prefix of capsule namespace names" };
            var criu = new Option<string>("--criu")
            {
                DefaultValueFactory = _ => Checkpoint.Criu.DefaultBinary,
                Description = "CRIU binary (4.2.1 or newer)"
            };
            var serves = new Option<string>("--serves")
            {
                DefaultValueFactory = _ => "",
                Description = "Gateway mode: the ordinary networks behind this host (prefixes, comma-separated)"
            };
            var icmpFrom = new Option<string>("--icmp-from")
            {
                DefaultValueFactory = _ => "",
                Description =
                    "Gateway mode: source address of the ICMP unreachable answers (its ordinary-side address)"
            };
            var holdLease = new Option<double>("--hold-lease")
            {
                DefaultValueFactory = _ => 15,
                Description =
                    "Seconds a hold lasts when its requester names none (a dead migration source holds no longer)",
            };
            var holdSpool = new Option<string>("--hold-spool")
            {
                DefaultValueFactory = _ => AgentOptions.DefaultHoldSpool,
                Description = "Folder in memory (tmpfs) where holds keep their packets, so they outlive the agent",
            };
            var metrics = new Option<string>("--metrics")
            {
                DefaultValueFactory = _ => "",
                Description = "Serve Prometheus metrics at http://ADDRESS:PORT/metrics (default: not served)",
            };
            var agent = new Command("agent", "Run the host agent (capsuled) in the current network namespace")
            {
                host, underlay, port, mtu, directory, listen, state, prefix, criu, serves, icmpFrom, holdLease,
                holdSpool, pidFile, metrics,
            };
            agent.Hidden = true;
            agent.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                if (Names.HostNameError(pr.GetValue(host)) is { } e) throw new UserError(e);
                if (pr.GetValue(mtu) is < 576 or > 65535)
                    throw new UserError("--underlay-mtu must be between 576 and 65535");
                foreach (var p in pr.GetValue(serves)!.Split(',', StringSplitOptions.RemoveEmptyEntries))
                    Prefix.Parse(p.Trim());
                if (pr.GetValue(icmpFrom) is { Length: > 0 } f) Locator.Parse(f);
                var lease = pr.GetValue(holdLease);
                if (!(lease > 0) || lease > Engine.MaxLease.TotalSeconds)
                {
                    var most = Engine.MaxLease.TotalSeconds;
                    throw new UserError($"--hold-lease must be more than 0 and at most {most} seconds");
                }
                var o = new AgentOptions(pr.GetValue(host)!, Locator.Parse(pr.GetValue(underlay)!), pr.GetValue(port),
                    pr.GetValue(mtu), pr.GetValue(directory)!, pr.GetValue(listen)!, pr.GetValue(state)!,
                    pr.GetValue(prefix)!, pr.GetValue(criu)!, pr.GetValue(serves)!, pr.GetValue(icmpFrom)!)
                {
                    HoldLease = TimeSpan.FromSeconds(lease),
                    HoldSpool = pr.GetValue(holdSpool)!,
                    Metrics = MetricsOption(pr.GetValue(metrics)!, pr.GetValue(listen)!),
                };
                return await AgentHost.RunAsync(o, pr.GetValue(pidFile), ct);
            }));
            yield return agent;
        }
        {
            var state = new Option<string>("--state")
                { Required = true, Description = "Folder holding the directory's durable state" };
            var listen = new Option<string>("--listen")
                { Required = true, Description = "Where to serve (unix:/path or http://addr:port)" };
            var pool = new Option<string>("--pool")
                { DefaultValueFactory = _ => "100.64.0.0/16", Description = "Locator pool, an IPv4 prefix" };
            var dir = new Command("directory", "Run the embedded capsule directory") { state, listen, pool, pidFile };
            dir.Hidden = true;
            dir.SetAction((pr, ct) => CommandTree.Run(async () =>
                await DirectoryServer.RunAsync(pr.GetValue(state)!, Prefix.Parse(pr.GetValue(pool)!),
                    pr.GetValue(listen)!, pr.GetValue(pidFile), ct)));
            yield return dir;
        }
        {
            var name = new Option<string>("--name")
                { DefaultValueFactory = _ => "daemon", Description = "What the daemon is, for the log" };
            var childPid = new Option<string?>("--child-pid-file")
                { Description = "The daemon's own pid file (removed when it dies)" };
            var cmd = new Argument<string[]>("command")
                { Description = "The daemon's command (after --)", Arity = ArgumentArity.OneOrMore };
            var supervise = new Command("supervise",
                "Run a daemon and restart it whenever it exits unasked (systemd's Restart=always)")
                { name, pidFile, childPid, cmd };
            supervise.Hidden = true;
            // A synchronous action on purpose: System.CommandLine gives an async action's SIGTERM only
            // two seconds and then exits, whereas the supervisor must outlive its daemon's shutdown.
            supervise.SetAction(pr => CommandTree.Run(async () =>
            {
                Linux.Native.CloseInheritedOnExec();
                var own = pr.GetValue(pidFile);
                if (own is not null) await File.WriteAllTextAsync(own, Environment.ProcessId.ToString());
                try
                {
                    var supervisor = new Supervisor(pr.GetValue(name)!, pr.GetValue(cmd)!, pr.GetValue(childPid));
                    return await supervisor.RunAsync();
                }
                finally
                {
                    if (own is not null) File.Delete(own);
                }
            }).GetAwaiter().GetResult());
            yield return supervise;
        }
    }

    /// <summary>--metrics checked (its errors are ArgumentExceptions: one line for the user).</summary>
    static string MetricsOption(string metrics, string listen)
    {
        if (metrics.Length == 0) return metrics;
        var (_, port) = Agent.Metrics.MetricsEndpoint.Parse(metrics);
        if (listen.StartsWith("http:", StringComparison.Ordinal) && new Uri(listen).Port == port)
            throw new UserError($"--metrics needs a port other than --listen's ({port})");
        return metrics;
    }
}
