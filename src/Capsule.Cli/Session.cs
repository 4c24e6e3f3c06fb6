using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>What a CLI command talks to: the directory of the chosen lab, and agents found through it.</summary>
public sealed class Session(string lab)
{
    /// <summary>
    /// Where labs on this machine serve: the CLI knows no lab's layout, the lab layer does (Capsule.Lab's
    /// LabTargets), and the host sets it before it runs a command.
    /// </summary>
    public static ILabTargets? Labs { get; set; }

    static ILabTargets LabTargets => Labs ?? throw new InvalidOperationException("this program knows no labs");

    /// <summary>The lab this session acts on (`--lab`).</summary>
    public string Lab => lab;
    public IDirectory Directory => _directory ??= DirectoryClient.Open(DirectoryEndpoint);
    IDirectory? _directory;

    static string? DirectoryOverride =>
        Environment.GetEnvironmentVariable("CAPSULE_DIRECTORY") is { Length: > 0 } e ? e : null;

    string DirectoryEndpoint =>
        DirectoryOverride ?? LabTargets.DirectoryEndpoint(lab);

    public async Task<(HostRecord Host, HostAgent.HostAgentClient Agent)> AgentAsync(string host, CancellationToken ct)
        => AgentOf(await Directory.SnapshotAsync(ct), host);

    (HostRecord Host, HostAgent.HostAgentClient Agent) AgentOf(DirectoryState state, string host)
    {
        if (!state.Hosts.TryGetValue(host, out var h))
            throw new UserError($"no host named '{host}'; hosts: {string.Join(", ", state.Hosts.Keys)}");
        return (h, new HostAgent.HostAgentClient(Channels.For(AgentEndpoint(h))));
    }

    /// <summary>
    /// Where this CLI reaches a host's agent: what the agent told the directory, except in a lab, whose
    /// agents serve on TCP inside the lab's namespaces, out of this machine's reach; there, the host's
    /// control socket.
    /// </summary>
    public string AgentEndpoint(HostRecord h) =>
        DirectoryOverride is null && LabTargets.AgentEndpoint(lab, h.Name) is { } control ? control
        : h.AgentEndpoint;

    /// <summary>Creates a capsule through its host's agent; fails if its first process is not running.</summary>
    public async Task<CapsuleInfo> CreateAsync(string name, string host, IEnumerable<string> command,
        CancellationToken ct)
    {
        var (_, agent) = await AgentAsync(host, ct);
        var req = new CreateRequest { Name = name };
        req.Command.AddRange(command);
        var info = await agent.CreateAsync(req, cancellationToken: ct);
        if (info.Pid == 0)
            throw new InvalidOperationException(
                $"capsule '{name}' on {host} is not running ({info.State.ToString().ToLowerInvariant()})");
        return info;
    }

    /// <summary>
    /// Tells every host's agent to end its hold for <paramref name="locator"/>: flush to <paramref name="to"/>, or
    /// drop when none.
    /// </summary>
    public async Task ReleaseHoldsAsync(Locator locator, Locator to, CancellationToken ct)
    {
        var state = await Directory.SnapshotAsync(ct);
        await Task.WhenAll(state.Hosts.Values.Select(async h =>
        {
            try
            {
                await new HostAgent.HostAgentClient(Channels.For(AgentEndpoint(h))).ReleaseAsync(
                    new ReleaseRequest { Locator = locator.ToString(), ToUnderlay = to.IsNone ? "" : to.ToString() },
                    deadline: DateTime.UtcNow.AddSeconds(5), cancellationToken: ct);
            }
            catch (RpcException) { } // an agent that is down holds nothing
        }));
    }

    public async Task<(CapsuleRecord Capsule, HostAgent.HostAgentClient Agent)> CapsuleAsync(string name,
        CancellationToken ct)
    {
        var state = await Directory.SnapshotAsync(ct);
        if (!state.Capsules.TryGetValue(name, out var c))
            throw new UserError($"no capsule named '{name}'; `capsule ls` lists them");
        // The same snapshot names its host: one call to the directory, not two.
        var (_, agent) = AgentOf(state, c.Host);
        return (c, agent);
    }
}

/// <summary>An error the user can act on; printed as one line, exit code 1.</summary>
public sealed class UserError(string message) : Exception(message);

/// <summary>Where a named lab on this machine serves, for the `--lab` option.</summary>
public interface ILabTargets
{
    /// <summary>Why <paramref name="lab"/> cannot be a lab's name, or null when it can.</summary>
    string? NameError(string lab);

    /// <summary>Where the CLI reaches the lab's directory; a <see cref="UserError"/> when the lab is not up.</summary>
    string DirectoryEndpoint(string lab);

    /// <summary>The control socket of <paramref name="host"/>'s agent in the lab, or null when it has none.</summary>
    string? AgentEndpoint(string lab, string host);
}
