using Capsule.Core;
using Capsule.Dir;
using Capsule.Lab;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>What a CLI command talks to: the directory of the chosen lab, and agents found through it.</summary>
internal sealed class Session(string lab)
{
    public LabPaths Paths { get; } = new(lab);
    public IDirectory Directory => _directory ??= DirectoryClient.Open(DirectoryEndpoint);
    IDirectory? _directory;

    static string? DirectoryOverride =>
        Environment.GetEnvironmentVariable("CAPSULE_DIRECTORY") is { Length: > 0 } e ? e : null;

    string DirectoryEndpoint =>
        DirectoryOverride is { } e ? e
        : File.Exists(Paths.DirectorySocket) ? Paths.DirectoryEndpoint
        : new LabRunner(Paths).Load() is { EtcdMembers.Count: > 0 } etcdLab ? etcdLab.Directory
        : throw new UserError($"lab '{Paths.Name}' is not up (no directory at {Paths.DirectorySocket}); " +
            $"start it with `capsule lab up`{(Paths.Name == LabPaths.DefaultName ? "" : " --lab " + Paths.Name)}");

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
        DirectoryOverride is null && File.Exists(Paths.AgentSocket(h.Name)) ? Paths.AgentEndpoint(h.Name)
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
internal sealed class UserError(string message) : Exception(message);
