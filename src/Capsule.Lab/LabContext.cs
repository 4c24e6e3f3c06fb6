using System.CommandLine;
using Capsule.Cli;

namespace Capsule.Lab;

/// <summary>
/// A lab as the CLI sees it: a client context named after the lab, which `lab up` writes into the client
/// config and `lab down` removes. Its agents are reached through their control sockets, since the TCP
/// endpoints they advertise live inside the lab's namespaces.
/// </summary>
public static class LabContext
{
    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    /// <summary>The lab a lab command acts on: --lab, --context, CAPSULE_LAB, CAPSULE_CONTEXT, else "lab".</summary>
    public static LabPaths LabOf(ParseResult pr)
    {
        var lab = pr.GetValue(CommandTree.LabOption) ?? pr.GetValue(CommandTree.ContextOption)
            ?? Env("CAPSULE_LAB") ?? Env("CAPSULE_CONTEXT") ?? LabPaths.DefaultName;
        if (LabPaths.NameError(lab) is { } e) throw new UserError(e);
        return new LabPaths(lab);
    }

    /// <summary>The context of the lab at <paramref name="paths"/>, up or about to come up.</summary>
    public static ClientContext Of(LabPaths paths) =>
        new(paths.Name, new LabRunner(paths).Load() is { EtcdMembers.Count: > 0 } r
            ? r.Directory
            : paths.DirectoryEndpoint)
        {
            AgentSockets = paths.RunDir,
            Lab = true,
        };

    /// <summary>The context of the lab <paramref name="name"/> when it is up, for a client config lacking it.</summary>
    public static ClientContext? IfUp(string name) =>
        LabPaths.NameError(name) is null && File.Exists(new LabPaths(name).RecordFile)
            ? Of(new LabPaths(name))
            : null;

    /// <summary>A session on the lab <paramref name="name"/> (the demo's and the benchmarks' own labs).</summary>
    public static Session Session(string name) => new(Of(new LabPaths(name)));

    /// <summary>Fails when the client config has a context of the lab's name that is not a lab's.</summary>
    public static void CheckFree(LabPaths paths) => Check(ClientConfig.Read(), paths);

    /// <summary>Writes the lab's context (<see cref="CheckFree"/> holds again under the file's lock).</summary>
    public static void Write(LabPaths paths) => ClientConfig.Update(f =>
    {
        Check(f, paths);
        f.Put(Of(paths));
        return true;
    });

    static void Check(ClientConfigFile f, LabPaths paths)
    {
        if (f.Find(paths.Name) is { Lab: false })
            throw new InvalidOperationException($"the client config ({ClientConfig.FilePath}) has a context " +
                $"named '{paths.Name}' that is not a lab's; pick another lab name, or remove it with " +
                $"`capsule context rm {paths.Name}`");
    }

    /// <summary>Removes the lab's context if the lab wrote it; when it was the current one, none is.</summary>
    public static void Remove(LabPaths paths)
    {
        if (ClientConfig.Read().Find(paths.Name) is not { Lab: true }) return;
        ClientConfig.Update(f =>
        {
            var removed = f.Contexts.RemoveAll(c => c.Name == paths.Name && c.Lab);
            if (removed > 0 && f.Current == paths.Name) f.Current = null;
            return removed;
        });
    }

    extension(Session s)
    {
        /// <summary>The folders and names of the lab a lab context is named after.</summary>
        public LabPaths Paths => new(s.Context.Name);
    }
}
