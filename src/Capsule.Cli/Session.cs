using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Capsule.Trust;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>What a CLI command talks to: the directory of the chosen context, and agents found through it.</summary>
public sealed class Session
{
    readonly ClientContext context;

    public Session(ClientContext context)
    {
        this.context = context;
        if (context.Cert is null || Channels.Identity is not null) return;
        try
        {
            Channels.UseIdentity(TlsIdentity.Load(context.Ca!, context.Cert, context.Key!));
        }
        catch (TrustException e)
        {
            throw new UserError($"context {context.Name}: {e.Message}; fix it with `capsule context set`");
        }
    }

    public ClientContext Context => context;
    public IDirectory Directory => _directory ??= DirectoryClient.Open(context.Directory);
    IDirectory? _directory;

    public async Task<(HostRecord Host, HostAgent.HostAgentClient Agent)> AgentAsync(string host, CancellationToken ct)
        => AgentOf(await Directory.SnapshotAsync(ct), host);

    (HostRecord Host, HostAgent.HostAgentClient Agent) AgentOf(DirectoryState state, string host)
    {
        if (!state.Hosts.TryGetValue(host, out var h))
            throw new UserError($"no host named '{host}'; hosts: {string.Join(", ", state.Hosts.Keys)}");
        return (h, new HostAgent.HostAgentClient(Channels.For(AgentEndpoint(h))));
    }

    /// <summary>
    /// Where this CLI reaches a host's agent: what the agent told the directory, unless the context says
    /// otherwise (a lab's agents serve on TCP inside the lab's namespaces, out of this machine's reach; the
    /// lab's context points at their control sockets).
    /// </summary>
    public string AgentEndpoint(HostRecord h) => context.AgentEndpoint(h.Name, h.AgentEndpoint);

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
