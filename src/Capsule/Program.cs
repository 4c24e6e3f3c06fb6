using System.CommandLine;
using Capsule.Cli;
using Capsule.Lab;

namespace Capsule;

internal static class Program
{
    static async Task<int> Main(string[] args)
    {
        CommandTree.LabIfUp = LabContext.IfUp;
        CommandTree.LabNameError = LabPaths.NameError;
        var root = Build();
        return await root.Parse(args).InvokeAsync();
    }

    /// <summary>
    /// The `capsule` command line: the CLI's client commands (Capsule.Cli), the lab's (Capsule.Lab) and the
    /// daemons (`capsule agent`, `capsule directory`).
    /// </summary>
    public static RootCommand Build()
    {
        var root = new RootCommand(
            "Capsule: move running process groups between hosts without closing their connections.");
        root.Options.Add(CommandTree.ContextOption);
        root.Options.Add(CommandTree.LabOption);
        root.Subcommands.Add(ContextCommands.Build());
        foreach (var c in TrustCommands.Build()) root.Subcommands.Add(c);
        root.Subcommands.Add(LabCommands.Build());
        foreach (var c in CapsuleCommands.Build()) root.Subcommands.Add(c);
        foreach (var c in SuspendCommands.Build()) root.Subcommands.Add(c);
        root.Subcommands.Add(MigrateCommand.Build());
        root.Subcommands.Add(DrainCommand.Build());
        foreach (var c in HostCommands.Build()) root.Subcommands.Add(c);
        root.Subcommands.Add(EventsCommand.Build());
        root.Subcommands.Add(Doctor.Build());
        root.Subcommands.Add(Demo.Build());
        root.Subcommands.Add(Bench.Build());
        foreach (var c in DaemonCommands.Build()) root.Subcommands.Add(c);
        return root;
    }
}
