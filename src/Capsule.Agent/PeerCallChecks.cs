using System.Collections.Concurrent;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Hosting;
using Grpc.Core;

namespace Capsule.Agent;

/// <summary>
/// Which host may make the host-to-host calls of a migration for which capsule (issue 10), after the role check
/// (<see cref="AgentAccess"/>): only the capsule's current host, as the directory names it, holds its packets
/// here, prepares it here or sends its image; a hold is released by that host or by the one that took it (a
/// source releases after the directory already names the target); a host installs data-plane keys only in its
/// own name. The local view of the directory may lag a change: a refusal is decided on a fresh snapshot.
/// </summary>
internal sealed class PeerCallChecks(DataPlaneHost dataPlane, IDirectory directory)
{
    // Who took each hold and who prepared each capsule here: entries only a capsule's own host adds.
    readonly ConcurrentDictionary<uint, string> _holders = new();
    readonly ConcurrentDictionary<string, string> _preparers = new();

    public async Task HoldAsync(ServerCallContext context, Locator capsule)
    {
        if (Host(context, $"hold the packets of {capsule}") is not { } host) return;
        // A renewal by the host that took the hold: its lease may tick after the directory already names the target.
        // Only while that hold lives: one that expired (its source died) is asked for anew, as any other.
        if (_holders.TryGetValue(capsule.Value, out var holder) && holder == host
            && await dataPlane.Engine.IsHoldingAsync(capsule)) return;
        _holders.TryRemove(capsule.Value, out _);
        await RequireHostOfAsync(context, host, c => c.Locator == capsule, $"hold the packets of {capsule}");
        _holders[capsule.Value] = host;
    }

    public async Task ReleaseAsync(ServerCallContext context, Locator capsule)
    {
        if (Host(context, $"release the packets of {capsule}") is not { } host) return;
        if (_holders.TryGetValue(capsule.Value, out var holder) && holder == host)
            _holders.TryRemove(capsule.Value, out _);
        else
            await RequireHostOfAsync(context, host, c => c.Locator == capsule, $"release the packets of {capsule}");
    }

    public async Task PrepareAsync(ServerCallContext context, string capsule)
    {
        if (Host(context, $"move capsule '{capsule}' here") is not { } host) return;
        await RequireHostOfAsync(context, host, c => c.Name == capsule, $"move capsule '{capsule}' here");
        _preparers[capsule] = host;
    }

    /// <summary>
    /// The image, and an abort, only from the host that prepared the move here (or the capsule's host).
    /// </summary>
    public async Task SourceAsync(ServerCallContext context, string capsule, bool done)
    {
        if (Host(context, $"send or abort the move of capsule '{capsule}'") is not { } host) return;
        if (!_preparers.TryGetValue(capsule, out var preparer) || preparer != host)
            await RequireHostOfAsync(context, host, c => c.Name == capsule, $"send the image of capsule '{capsule}'");
        if (done) _preparers.TryRemove(capsule, out _);
    }

    public void PeerKey(ServerCallContext context, string fromHost)
    {
        if (Host(context, $"install a data-plane key of host {fromHost}") is { } host && host != fromHost)
            throw Caller.Of(context).Denied($"install a data-plane key in the name of host {fromHost}");
    }

    /// <summary>The calling host's name; null for an admin (anything goes); a refusal for anyone else.</summary>
    static string? Host(ServerCallContext context, string what)
    {
        var caller = Caller.Of(context);
        if (caller.IsAdmin) return null;
        return caller.IsHost(out var host) ? host : throw caller.Denied(what);
    }

    async Task RequireHostOfAsync(ServerCallContext context, string host, Func<CapsuleRecord, bool> capsule,
        string what)
    {
        if (dataPlane.State is { } known && IsHostOf(known, host, capsule)) return;
        var fresh = await directory.SnapshotAsync(context.CancellationToken);
        if (!IsHostOf(fresh, host, capsule))
            throw Caller.Of(context).Denied(what + ": the directory does not name it the capsule's host");
    }

    static bool IsHostOf(DirectoryState state, string host, Func<CapsuleRecord, bool> capsule) =>
        state.Capsules.Values.Any(c => capsule(c) && c.Host == host);
}
