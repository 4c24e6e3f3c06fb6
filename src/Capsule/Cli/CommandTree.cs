using System.CommandLine;
using Capsule.Dir;
using Capsule.Lab;
using Capsule.Linux;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>The `capsule` command line. Handlers live beside it, one file per group.</summary>
internal static class CommandTree
{
    public static readonly Option<string> LabOption = new("--lab")
    {
        Description = "Which lab to act on (env CAPSULE_LAB)",
        Recursive = true,
        DefaultValueFactory = _ =>
            Environment.GetEnvironmentVariable("CAPSULE_LAB") is { Length: > 0 } l ? l : LabPaths.DefaultName,
    };

    public static readonly Option<bool> JsonOption = new("--json")
        { Description = "Print JSON for scripts instead of a table for people" };

    public static RootCommand Build()
    {
        var root = new RootCommand(
            "Capsule: move running process groups between hosts without closing their connections.");
        root.Options.Add(LabOption);
        root.Subcommands.Add(LabCommands.Build());
        foreach (var c in CapsuleCommands.Build()) root.Subcommands.Add(c);
        foreach (var c in SuspendCommands.Build()) root.Subcommands.Add(c);
        root.Subcommands.Add(MigrateCommand.Build());
        root.Subcommands.Add(EventsCommand.Build());
        root.Subcommands.Add(Doctor.Build());
        root.Subcommands.Add(Demo.Build());
        root.Subcommands.Add(Bench.Build());
        foreach (var c in DaemonCommands.Build()) root.Subcommands.Add(c);
        return root;
    }

    public static Session SessionOf(ParseResult pr)
    {
        var lab = pr.GetValue(LabOption)!;
        if (LabPaths.NameError(lab) is { } e) throw new UserError(e);
        return new Session(lab);
    }

    /// <summary>Runs a handler; expected failures become one clear line on stderr and exit code 1.</summary>
    public static async Task<int> Run(Func<Task<int>> handler)
    {
        try
        {
            return await handler();
        }
        catch (Exception e) when (e is UserError or DirectoryException or CommandFailedException or ArgumentException
            or FormatException or InvalidOperationException or TimeoutException)
        {
            Output.Error(e.Message);
            return 1;
        }
        catch (RpcException e)
        {
            Output.Error(e.StatusCode == StatusCode.Unavailable
                ? $"an agent or the directory is not reachable: {e.Status.Detail}" : e.Status.Detail);
            return 1;
        }
        catch (OperationCanceledException)
        {
            Output.Error("cancelled");
            return 130;
        }
    }
}
