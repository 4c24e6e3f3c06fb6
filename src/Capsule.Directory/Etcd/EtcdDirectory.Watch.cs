using System.Runtime.CompilerServices;
using Capsule.Core;
using Etcdserverpb;
using Grpc.Core;

namespace Capsule.Dir.Etcd;

/// <summary>
/// Watching: a snapshot at revision R, then etcd's watch from R + 1 on the prefix. Each change is
/// applied to the view (O(change)) and the new state handed on. A watch that breaks (its member
/// died, the network went) resumes on another member from the revision after the last one applied:
/// nothing is missed and nothing applied twice. Only when etcd compacted past that revision is a
/// snapshot read again.
/// </summary>
public sealed partial class EtcdDirectory
{
    static readonly TimeSpan WatchRetry = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// etcd's "require leader" (clientv3.WithRequireLeader): a member cut off from its cluster ends
    /// the watch instead of keeping it open and silent, so the watch moves to a member that hears changes.
    /// </summary>
    static readonly Metadata RequireLeader = new() { { "hasleader", "true" } };

    public async IAsyncEnumerable<DirectoryUpdate> WatchAsync([EnumeratorCancellation] CancellationToken ct)
    {
        var view = await ViewAsync(ct);
        yield return DirectoryUpdate.Whole(view.State);
        while (!ct.IsCancellationRequested)
        {
            var (watch, _, index) = _cluster.Member();
            using var call = watch.Watch(RequireLeader, cancellationToken: ct);
            var resync = false;
            var broken = false;
            try
            {
                await call.RequestStream.WriteAsync(new WatchRequest
                {
                    CreateRequest = new WatchCreateRequest
                    {
                        Key = _keys.All, RangeEnd = _keys.AllEnd, StartRevision = view.Revision + 1,
                    },
                }, ct);
            }
            catch (RpcException) when (!ct.IsCancellationRequested)
            {
                broken = true;
            }
            while (!broken)
            {
                WatchResponse r;
                try
                {
                    if (!await call.ResponseStream.MoveNext(ct))
                    {
                        broken = true;
                        break;
                    }
                    r = call.ResponseStream.Current;
                }
                catch (RpcException) when (!ct.IsCancellationRequested)
                {
                    // Whatever ended the stream (a dead member, no leader, "request timed out" under
                    // load), the watch is taken up again on the next member: an agent must never lose
                    // its directory over one member's answer.
                    broken = true;
                    break;
                }
                if (r.CompactRevision > 0 || r.Canceled)
                {
                    resync = true; // what we missed is gone from etcd's history: read it whole again
                    break;
                }
                if (r.Events.Count == 0) continue; // created, or a progress notice
                var changes = new List<DirectoryChange>(r.Events.Count);
                foreach (var e in r.Events)
                    if (view.Apply(e) is { } change) changes.Add(change);
                yield return new DirectoryUpdate(view.State, changes, false);
            }
            if (broken) _cluster.Failed(index);
            if (resync)
            {
                view = await ViewAsync(ct);
                yield return DirectoryUpdate.Whole(view.State);
            }
            else
            {
                await Task.Delay(WatchRetry, ct);
            }
        }
    }
}
