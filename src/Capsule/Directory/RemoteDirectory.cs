using System.Runtime.CompilerServices;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Dir;

/// <summary>A directory reached over gRPC: what agents and the CLI hold.</summary>
internal sealed class RemoteDirectory(string endpoint) : IDirectory
{
    readonly Protos.CapsuleDirectory.CapsuleDirectoryClient _client = new(Channels.For(endpoint));

    public string Endpoint => endpoint;

    async Task<T> Call<T>(Func<Task<T>> f)
    {
        try { return await f(); }
        catch (RpcException e)
        {
            var text = Channels.Describe(e, $"the directory at {endpoint}");
            throw new DirectoryException(text, conflict: e.StatusCode == StatusCode.Aborted);
        }
    }

    public Task PutHostAsync(HostRecord host, CancellationToken ct = default) =>
        Call(async () => await _client.PutHostAsync(host.ToWire(), cancellationToken: ct));

    public Task DeleteHostAsync(string name, CancellationToken ct = default) =>
        Call(async () => await _client.DeleteHostAsync(new NameRequest { Name = name }, cancellationToken: ct));

    public Task<CapsuleRecord> AllocateAsync(string name, string host, CancellationToken ct = default) =>
        Call(async () => (await _client.AllocateAsync(new AllocateRequest { Name = name, Host = host }, cancellationToken: ct)).ToCore());

    public Task<CapsuleRecord> UpdateAsync(string name, string host, Core.CapsuleState state, long expectRevision,
        string? detail = null, CancellationToken ct = default) =>
        Call(async () => (await _client.UpdateAsync(new UpdateRequest
        {
            Name = name, Host = host, State = (Protos.CapsuleState)state, Detail = detail ?? "", ExpectRevision = expectRevision,
        }, cancellationToken: ct)).ToCore());

    public Task ReleaseAsync(string name, CancellationToken ct = default) =>
        Call(async () => await _client.ReleaseAsync(new NameRequest { Name = name }, cancellationToken: ct));

    public Task<DirectoryState> SnapshotAsync(CancellationToken ct = default) =>
        Call(async () => (await _client.GetSnapshotAsync(new SnapshotRequest(), cancellationToken: ct)).ToCore());

    public async IAsyncEnumerable<DirectoryState> WatchAsync([EnumeratorCancellation] CancellationToken ct)
    {
        using var call = _client.Watch(new WatchRequest(), cancellationToken: ct);
        while (true)
        {
            Snapshot s;
            try
            {
                if (!await call.ResponseStream.MoveNext(ct)) yield break;
                s = call.ResponseStream.Current;
            }
            catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
            {
                throw new DirectoryException(Channels.Describe(e, $"the directory at {endpoint}"));
            }
            yield return s.ToCore();
        }
    }
}
