using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Dir;

/// <summary>
/// Serves a directory over gRPC; directory rule violations become FailedPrecondition with the rule's
/// own words, a lost conditional update Aborted (gRPC's code for a concurrency conflict).
/// </summary>
internal sealed class DirectoryService(EmbeddedDirectory dir) : Protos.CapsuleDirectory.CapsuleDirectoryBase
{
    static async Task<T> Guard<T>(Func<Task<T>> f)
    {
        try { return await f(); }
        catch (DirectoryException e)
        {
            var code = e.Conflict ? StatusCode.Aborted : StatusCode.FailedPrecondition;
            throw new RpcException(new Status(code, e.Message));
        }
    }

    static readonly Empty Done = new();

    public override Task<Empty> PutHost(Host request, ServerCallContext context) =>
        Guard(async () =>
        {
            RecordChecks.Host(context, request.Name);
            await dir.PutHostAsync(request.ToCore());
            return Done;
        });

    public override Task<Empty> DeleteHost(NameRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            RecordChecks.Host(context, request.Name);
            await dir.DeleteHostAsync(request.Name);
            return Done;
        });

    public override Task<CapsuleEntry> Allocate(AllocateRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            RecordChecks.Allocate(context, request.Name, request.Host);
            return (await dir.AllocateAsync(request.Name, request.Host)).ToWire();
        });

    public override Task<CapsuleEntry> Update(UpdateRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            // Checked against the revision the update is conditional on when it names one: a record that changed
            // since fails the update anyway.
            RecordChecks.Change(context, dir.State, request.Name, takesSuspended: true);
            return (await dir.UpdateAsync(request.Name, request.Host, (Core.CapsuleState)request.State,
                request.ExpectRevision, request.Detail.Length == 0 ? null : request.Detail)).ToWire();
        });

    public override Task<Empty> Release(NameRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            RecordChecks.Change(context, dir.State, request.Name, takesSuspended: false);
            await dir.ReleaseAsync(request.Name);
            return Done;
        });

    public override Task<Snapshot> GetSnapshot(SnapshotRequest request, ServerCallContext context) =>
        Task.FromResult(dir.State.ToWire());

    public override async Task Watch(WatchRequest request, IServerStreamWriter<WatchUpdate> responseStream,
        ServerCallContext context)
    {
        try
        {
            await foreach (var u in dir.WatchAsync(context.CancellationToken))
            {
                var wire = new WatchUpdate();
                if (u.Full) wire.Full = u.State.ToWire();
                foreach (var c in u.Changes) wire.Changes.Add(c.ToWire());
                await responseStream.WriteAsync(wire, context.CancellationToken);
            }
        }
        catch (OperationCanceledException) { }
    }
}
