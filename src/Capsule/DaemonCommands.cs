using System.CommandLine;
using Capsule.Agent;
using Capsule.Agent.Linux;
using Capsule.Cli;
using Capsule.Dir;
using Capsule.Lab;

namespace Capsule;

/// <summary>
/// The daemons: `capsule agent` (capsuled, one per host) and `capsule directory` (the embedded directory), each
/// run from a config file (`--config`, docs/config.md) that the environment and the options override, and
/// `--check`ed with the same code; and the lab's `supervise`, which restarts them as systemd would.
/// </summary>
internal static class DaemonCommands
{
    public static IEnumerable<Command> Build()
    {
        yield return Agent();
        yield return DirectoryDaemon();
        yield return Supervise();
    }

    /// <summary>
    /// `capsule agent --config /etc/capsule/agent.json`. Every option overrides its key of the file (see
    /// <see cref="AgentConfig"/>, where the defaults are); none is required on its own.
    /// </summary>
    static Command Agent()
    {
        var keyed = new KeyedOptions();
        keyed.Add(new Option<string>("--host") { Description = "This host's name (key Host)" }, "Host");
        keyed.Add(new Option<string>("--underlay") { Description = "This host's underlay IPv4 address (Underlay)" },
            "Underlay");
        keyed.Add(new Option<int>("--port") { Description = "UDP port for host-to-host traffic (Port; 7470)" },
            "Port");
        keyed.Add(new Option<int>("--underlay-mtu") { Description = "MTU of the underlay path (UnderlayMtu; 1500)" },
            "UnderlayMtu");
        keyed.Add(new Option<string>("--directory")
            { Description = "Directory endpoint, unix:/path or http://host:port (Directory)" }, "Directory");
        keyed.Add(new Option<string>("--listen")
        {
            Description = "Where to serve the agent API, unix:/path or http://addr:port (Listen; http://UNDERLAY:7471)",
        }, "Listen");
        keyed.Add(new Option<string>("--state") { Description = "This host's state folder (State)" }, "State");
        keyed.Add(new Option<string>("--netns-prefix")
            { Description = "Prefix of capsule namespace names (NetnsPrefix; capsule)" }, "NetnsPrefix");
        keyed.Add(new Option<string>("--criu") { Description = "CRIU binary, 4.2.1 or newer (Criu)" }, "Criu");
        keyed.Add(new Option<string>("--serves")
        {
            Description = "Gateway mode: the ordinary networks behind this host, prefixes comma-separated (Serves)",
        }, "Serves");
        keyed.Add(new Option<string>("--icmp-from")
        {
            Description = "Gateway mode: source address of its ICMP unreachable answers, its ordinary-side " +
                "address (IcmpFrom)",
        }, "IcmpFrom");
        keyed.Add(new Option<double>("--hold-lease")
        {
            Description = "Seconds a hold lasts when its requester names none, so a dead migration source holds " +
                "no longer (HoldLeaseSeconds; 15)",
        }, "HoldLeaseSeconds");
        keyed.Add(new Option<string>("--hold-spool")
        {
            Description = "Folder in memory (tmpfs) where holds keep their packets, so they outlive the agent " +
                "(HoldSpool)",
        }, "HoldSpool");
        keyed.Add(new Option<string>("--metrics")
        {
            Description = "Serve Prometheus metrics at http://ADDRESS:PORT/metrics (Metrics; default: not served)",
        }, "Metrics");
        keyed.Add(PidFileOption(), "PidFile");
        var agent = new Command("agent", "Run the host agent (capsuled) in the current network namespace");
        foreach (var o in keyed.Options) agent.Options.Add(o);
        // A synchronous action, as for `supervise`: System.CommandLine would give an async action two seconds
        // after SIGTERM and then exit, mid-way through the agent's stop. The host's lifetime handles SIGTERM.
        agent.SetAction(pr => CommandTree.Run(async () =>
        {
            var loaded = keyed.Load<AgentConfig>(pr, AgentConfig.EnvironmentPrefix);
            if (pr.GetValue(keyed.Check)) return DaemonSettings.Check("agent", loaded);
            var run = DaemonSettings.Run("agent", loaded);
            return await AgentHost.RunAsync(loaded.Settings.ToOptions(), run, CancellationToken.None);
        }).GetAwaiter().GetResult());
        return agent;
    }

    /// <summary>`capsule directory --config /etc/capsule/directory.json` (see <see cref="DirectoryConfig"/>).</summary>
    static Command DirectoryDaemon()
    {
        var keyed = new KeyedOptions();
        keyed.Add(new Option<string>("--state")
            { Description = "Folder holding the directory's durable state (State)" }, "State");
        keyed.Add(new Option<string>("--listen")
            { Description = "Where to serve, unix:/path or http://addr:port (Listen)" }, "Listen");
        keyed.Add(new Option<string>("--pool")
            { Description = "Locator pool, an IPv4 prefix (Pool; 100.64.0.0/16)" }, "Pool");
        keyed.Add(PidFileOption(), "PidFile");
        var dir = new Command("directory", "Run the embedded capsule directory (init, import: set up an etcd one)");
        foreach (var o in keyed.Options) dir.Options.Add(o);
        dir.Subcommands.Add(DirectoryAdmin.Init());
        dir.Subcommands.Add(DirectoryAdmin.Import());
        dir.SetAction(pr => CommandTree.Run(async () =>
        {
            var loaded = keyed.Load<DirectoryConfig>(pr, DirectoryConfig.EnvironmentPrefix);
            if (pr.GetValue(keyed.Check)) return DaemonSettings.Check("directory", loaded);
            var run = DaemonSettings.Run("directory", loaded);
            return await DirectoryServer.RunAsync(loaded.Settings, run, CancellationToken.None);
        }).GetAwaiter().GetResult());
        return dir;
    }

    static Option<string> PidFileOption() =>
        new("--pid-file") { Description = "Write the process id here while running (PidFile)" };

    static Command Supervise()
    {
        var pidFile = new Option<string?>("--pid-file") { Description = "Write the process id here while running" };
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
            Native.CloseInheritedOnExec();
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
        return supervise;
    }
}
