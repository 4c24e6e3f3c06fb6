using System.Diagnostics;
using System.Net.Http;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Dir;

/// <summary>
/// A directory reached over gRPC: what agents and the CLI hold. It rides out a restart of the
/// directory: a call that cannot reach it is tried again with a short backoff for up to
/// <see cref="RetryBudget"/>, then fails with the usual message. Watching is not retried here;
/// the watcher reconnects (an agent's data plane keeps its last table meanwhile).
/// </summary>
public sealed class RemoteDirectory(string endpoint, bool ownConnection = false) : IDirectory
{
    /// <summary>Long enough for a supervised directory to be restarted (1 s) and to start serving.</summary>
    static readonly TimeSpan RetryBudget = TimeSpan.FromSeconds(10);
    static readonly TimeSpan FirstDelay = TimeSpan.FromMilliseconds(50);
    static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(500);

    readonly Protos.CapsuleDirectory.CapsuleDirectoryClient _client =
        new(ownConnection ? Channels.Create(endpoint) : Channels.For(endpoint));

    public string Endpoint => endpoint;

    /// <summary>
    /// Runs one call, retrying while the directory is unreachable. A retried call may have been
    /// applied by an attempt whose answer was lost with the connection; if the retry is then refused
    /// (a conflict, or "already gone"), <paramref name="settle"/> reads the directory and returns the
    /// result if it already shows what was asked for, so the caller does not see a false failure.
    /// </summary>
    async Task<T> Call<T>(Func<Task<T>> f, CancellationToken ct, Func<Task<T?>>? settle = null) where T : class
    {
        var clock = Stopwatch.StartNew();
        var delay = FirstDelay;
        var retried = false;
        while (true)
        {
            try
            {
                return await f();
            }
            catch (RpcException e) when (Transient(e) && clock.Elapsed + delay < RetryBudget)
            {
                retried = true;
                await Task.Delay(delay, ct);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxDelay.Ticks));
            }
            catch (RpcException e) when (retried && settle is not null && IsRefusal(e))
            {
                if (await settle() is { } done) return done;
                throw Fail(e, retried);
            }
            catch (RpcException e)
            {
                throw Fail(e, retried);
            }
        }
    }

    DirectoryException Fail(RpcException e, bool retried)
    {
        var text = Channels.Describe(e, $"the directory at {endpoint}");
        if (retried && Transient(e)) text += $" (kept trying for {RetryBudget.TotalSeconds:0} s)";
        return new DirectoryException(text, conflict: e.StatusCode == StatusCode.Aborted);
    }

    static bool IsRefusal(RpcException e) => e.StatusCode is StatusCode.Aborted or StatusCode.FailedPrecondition;

    /// <summary>
    /// Whether the directory may be back soon: it is unreachable (refused, or the connection broke).
    /// A unix socket whose folder does not exist belongs to no running lab: that fails at once.
    /// </summary>
    bool Transient(RpcException e)
    {
        if (endpoint.StartsWith("unix:", StringComparison.Ordinal)
            && !System.IO.Directory.Exists(Path.GetDirectoryName(endpoint["unix:".Length..])))
            return false;
        return e.StatusCode == StatusCode.Unavailable
            || (e.StatusCode == StatusCode.Internal
                && e.Status.DebugException is IOException or HttpRequestException or SocketException);
    }

    async Task<CapsuleRecord?> Current(string name, CancellationToken ct) =>
        (await SnapshotAsync(ct)).Capsules.GetValueOrDefault(name);

    static readonly Empty Done = new();

    public Task PutHostAsync(HostRecord host, CancellationToken ct = default) =>
        Call(async () => await _client.PutHostAsync(host.ToWire(), cancellationToken: ct), ct); // idempotent

    public Task DeleteHostAsync(string name, CancellationToken ct = default) =>
        Call(async () => await _client.DeleteHostAsync(new NameRequest { Name = name }, cancellationToken: ct), ct,
            async () => (await SnapshotAsync(ct)).Hosts.ContainsKey(name) ? null : Done);

    public Task<CapsuleRecord> AllocateAsync(string name, string host, CancellationToken ct = default) =>
        Call(async () => (await _client.AllocateAsync(new AllocateRequest { Name = name, Host = host },
                cancellationToken: ct)).ToCore(), ct,
            async () => await Current(name, ct) is { State: Core.CapsuleState.Creating } c && c.Host == host
                ? c : null);

    public Task<CapsuleRecord> UpdateAsync(string name, string host, Core.CapsuleState state, long expectRevision,
        string? detail = null, CancellationToken ct = default) =>
        Call(async () => (await _client.UpdateAsync(new UpdateRequest
            {
                Name = name, Host = host, State = (Protos.CapsuleState)state, Detail = detail ?? "",
                ExpectRevision = expectRevision,
            }, cancellationToken: ct)).ToCore(), ct,
            // Our own earlier attempt moved the revision on: the record shows exactly what we asked for.
            async () => await Current(name, ct) is { } c && c.Revision > expectRevision
                && c.Host == host && c.State == state && c.Detail == detail ? c : null);

    public Task ReleaseAsync(string name, CancellationToken ct = default) =>
        Call(async () => await _client.ReleaseAsync(new NameRequest { Name = name }, cancellationToken: ct), ct,
            async () => await Current(name, ct) is null ? Done : null);

    public Task<DirectoryState> SnapshotAsync(CancellationToken ct = default) =>
        Call(async () => (await _client.GetSnapshotAsync(new SnapshotRequest(), cancellationToken: ct)).ToCore(), ct);

    /// <summary>The server's whole state first, then its changes applied here one by one (O(change) each).</summary>
    public async IAsyncEnumerable<DirectoryUpdate> WatchAsync([EnumeratorCancellation] CancellationToken ct)
    {
        using var call = _client.Watch(new WatchRequest(), cancellationToken: ct);
        DirectoryState? state = null;
        while (true)
        {
            WatchUpdate u;
            try
            {
                if (!await call.ResponseStream.MoveNext(ct)) yield break;
                u = call.ResponseStream.Current;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && ct.IsCancellationRequested)
            {
                // The watcher's own stop (an agent told to stop): a cancellation, not a failure of the host.
                throw new OperationCanceledException("the watch was stopped", e, ct);
            }
            catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
            {
                throw new DirectoryException(Channels.Describe(e, $"the directory at {endpoint}"));
            }
            if (u.Full is { } full)
            {
                state = full.ToCore();
                yield return DirectoryUpdate.Whole(state);
                continue;
            }
            if (state is null) throw new DirectoryException($"the directory at {endpoint} sent changes before a state");
            var changes = u.Changes.Select(c => c.ToCore()).ToList();
            foreach (var c in changes) state = state.Apply(c);
            yield return new DirectoryUpdate(state, changes, false);
        }
    }
}
