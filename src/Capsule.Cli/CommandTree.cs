using System.CommandLine;
using Capsule.Dir;
using Capsule.Linux;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>
/// What every command of the `capsule` command line shares: the --lab and --json options, the session, the
/// error handling. Handlers live beside it, one file per group; the host (src/Capsule) composes the tree.
/// </summary>
public static class CommandTree
{
    /// <summary>The lab commands act on when neither --lab nor CAPSULE_LAB names one.</summary>
    public const string DefaultLab = "lab";

    public static readonly Option<string> LabOption = new("--lab")
    {
        Description = "Which lab to act on (env CAPSULE_LAB)",
        Recursive = true,
        DefaultValueFactory = _ =>
            Environment.GetEnvironmentVariable("CAPSULE_LAB") is { Length: > 0 } l ? l : DefaultLab,
    };

    public static readonly Option<bool> JsonOption = new("--json")
        { Description = "Print JSON for scripts instead of a table for people" };

    public static Session SessionOf(ParseResult pr)
    {
        var lab = pr.GetValue(LabOption)!;
        if (Session.Labs?.NameError(lab) is { } e) throw new UserError(e);
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
