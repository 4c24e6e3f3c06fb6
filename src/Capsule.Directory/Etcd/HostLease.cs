using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;

namespace Capsule.Dir.Etcd;

/// <summary>
/// A host agent's sign of life: the host's <c>alive/NAME</c> key, bound to an etcd lease the agent
/// renews every third of its time to live. An agent that dies, hangs or loses every member for
/// longer than the lease disappears from <c>alive/</c> and its host shows as unreachable. A lease
/// that lapsed anyway (etcd unreachable too long) is granted anew and the key written again. An agent
/// that stops cleanly revokes its lease on the way out: its capsules may run on, but nobody vouches
/// for them until the next agent, so the host shows unreachable at once rather than a lease later.
/// </summary>
internal sealed class HostLease(EtcdCluster cluster, ByteString aliveKey, TimeSpan ttl) : IAsyncDisposable
{
    public static readonly TimeSpan DefaultTtl = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long a stop waits for etcd to revoke the lease. Past it the stop goes on regardless: the
    /// lease then ends by itself within its time to live, as a dead agent's does.
    /// </summary>
    static readonly TimeSpan RevokeBudget = TimeSpan.FromSeconds(2);

    readonly CancellationTokenSource _stop = new();
    Task? _loop;
    long _id;

    /// <summary>Grants the lease and writes the key (once); renewals then run in the background.</summary>
    public async Task StartAsync(CancellationToken ct)
    {
        if (_loop is not null) return;
        await GrantAsync(ct);
        _loop = RenewAsync(_stop.Token);
    }

    async Task GrantAsync(CancellationToken ct)
    {
        var grant = await cluster.Call((c, t) => c.LeaseGrantAsync(
            new LeaseGrantRequest { TTL = (long)ttl.TotalSeconds }, cancellationToken: t), ct);
        _id = grant.ID;
        await cluster.Call((c, t) => c.PutAsync(
            new PutRequest { Key = aliveKey, Value = ByteString.Empty, Lease = _id }, cancellationToken: t), ct);
    }

    async Task RenewAsync(CancellationToken stop)
    {
        var every = ttl / 3;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(every, stop);
                if (!await KeepAliveAsync(stop)) await GrantAsync(stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is RpcException or DirectoryException or IOException)
            {
                // etcd away for now: keep trying; the lease may lapse meanwhile, which is the truth.
            }
        }
    }

    /// <summary>One renewal; false when etcd no longer knows the lease (it lapsed).</summary>
    async Task<bool> KeepAliveAsync(CancellationToken ct)
    {
        var (_, lease, index) = cluster.Member();
        try
        {
            using var call = lease.LeaseKeepAlive(deadline: DateTime.UtcNow + ttl / 3, cancellationToken: ct);
            await call.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = _id }, ct);
            await call.RequestStream.CompleteAsync();
            if (!await call.ResponseStream.MoveNext(ct)) return true;
            return call.ResponseStream.Current.TTL > 0;
        }
        catch (RpcException e) when (EtcdCluster.Transient(e))
        {
            cluster.Failed(index);
            throw;
        }
    }

    /// <summary>Stops renewing and revokes the lease (bounded by <see cref="RevokeBudget"/>).</summary>
    public async ValueTask DisposeAsync()
    {
        await StopRenewingAsync();
        if (_id != 0) await RevokeAsync();
        _stop.Dispose();
    }

    /// <summary>
    /// Stops renewing without a word to etcd, so the lease runs out by itself as a dead agent's does;
    /// a later dispose revokes nothing. For tests of lease expiry.
    /// </summary>
    public async Task AbandonAsync()
    {
        await StopRenewingAsync();
        _id = 0;
    }

    async Task StopRenewingAsync()
    {
        if (!_stop.IsCancellationRequested) await _stop.CancelAsync();
        if (_loop is not null) await _loop; // after this, _id is the last lease the loop granted
    }

    async Task RevokeAsync()
    {
        using var budget = new CancellationTokenSource(RevokeBudget);
        try
        {
            await cluster.Call((c, t) => c.LeaseRevokeAsync(new LeaseRevokeRequest { ID = _id }, cancellationToken: t),
                budget.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException or DirectoryException)
        {
            // etcd slow, away, or the lease already lapsed: it ends by itself, the truth a little later.
        }
        _id = 0;
    }
}
