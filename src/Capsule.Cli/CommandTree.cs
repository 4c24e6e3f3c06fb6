using System.CommandLine;
using Capsule.Dir;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>
/// What every command of the `capsule` command line shares: --context, --lab, --json, the session, the
/// error handling. Handlers live beside it, one file per group; the host (src/Capsule) composes the tree.
/// </summary>
public static class CommandTree
{
    /// <summary>The lab (and its context) commands act on when nothing names one.</summary>
    public const string DefaultLab = "lab";

    public static readonly Option<string> ContextOption = new("--context")
    {
        Description = "Which context of the client config to use (env CAPSULE_CONTEXT; `capsule context ls`)",
        Recursive = true,
    };

    public static readonly Option<string> LabOption = new("--lab")
    {
        Description = "Which lab to act on; for other commands, shorthand for --context LAB (env CAPSULE_LAB)",
        Recursive = true,
    };

    public static readonly Option<bool> JsonOption = new("--json")
        { Description = "Print JSON for scripts instead of a table for people" };

    /// <summary>
    /// A lab's context when the lab is up, by the lab's name: the lab layer (Capsule.Lab's LabContext.IfUp)
    /// knows where a lab keeps its sockets, the CLI does not; the host sets this before it runs a command.
    /// </summary>
    public static Func<string, ClientContext?>? LabIfUp { get; set; }

    /// <summary>Why a name cannot be a lab's (the lab layer's rule), or null; set by the host like LabIfUp.</summary>
    public static Func<string, string?>? LabNameError { get; set; }

    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    /// <summary>
    /// The context a command uses: --context, --lab, CAPSULE_CONTEXT, CAPSULE_LAB, the config's current one,
    /// else the default lab's. CAPSULE_DIRECTORY alone (no context named) is a context of its own.
    /// </summary>
    public static Session SessionOf(ParseResult pr)
    {
        var name = pr.GetValue(ContextOption) ?? pr.GetValue(LabOption)
            ?? Env("CAPSULE_CONTEXT") ?? Env("CAPSULE_LAB");
        // Named as a lab (--lab, CAPSULE_LAB): a name no lab can have gets the lab's naming rule, not a
        // suggestion to bring up a lab of that name.
        var asLab = pr.GetValue(ContextOption) is null
            && (pr.GetValue(LabOption) is not null || Env("CAPSULE_CONTEXT") is null && Env("CAPSULE_LAB") is not null);
        if (name is null && Env("CAPSULE_DIRECTORY") is { } directory)
        {
            if (ClientConfig.EndpointError(directory) is { } bad) throw new UserError("CAPSULE_DIRECTORY: " + bad);
            return new Session(new ClientContext("CAPSULE_DIRECTORY", directory));
        }
        var config = ClientConfig.Read();
        name ??= config.Current ?? DefaultLab;
        // A lab that is up is found also when the config lacks its context (written under another
        // user's home, or removed by hand).
        var context = config.Find(name) ?? LabIfUp?.Invoke(name);
        if (context is not null) return new Session(context);
        if (asLab && LabNameError?.Invoke(name) is { } badLab) throw new UserError(badLab);
        var known = config.Contexts.Count == 0
            ? "it has none"
            : "contexts: " + string.Join(", ", config.Contexts.Select(c => c.Name));
        throw new UserError(name == DefaultLab
            ? $"no context chosen and lab '{name}' is not up: start it with `capsule lab up`, or add a " +
              $"cluster's context with `capsule context set NAME --directory ENDPOINT --use` ({known})"
            : $"no context named '{name}' in {ClientConfig.FilePath} ({known}); a lab's is there while the " +
              $"lab is up (`capsule lab up --lab {name}`)");
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
