using System.Diagnostics;
using System.Net.Http;
using System.Net.Sockets;
using Capsule.Rpc;
using dotnet_etcd;
using Etcdserverpb;
using Grpc.Core;

namespace Capsule.Dir.Etcd;

/// <summary>
/// The members of an etcd cluster as one client: each call goes to the member that answered last,
/// and moves on to the next one when that member is unreachable, for up to <see cref="RetryBudget"/>
/// (an election after a member dies takes a few seconds). Endpoints are <c>http://addr:port</c>
/// or <c>unix:/path</c>, the same forms as everywhere else in Capsule.
/// </summary>
internal sealed class EtcdCluster
{
    public static readonly TimeSpan RetryBudget = TimeSpan.FromSeconds(15);
    static readonly TimeSpan FirstDelay = TimeSpan.FromMilliseconds(50);
    static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(500);

    readonly string[] _endpoints;
    readonly EtcdClient[] _clients;
    readonly Watch.WatchClient[] _watchers;
    readonly Lease.LeaseClient[] _leases;
    int _current;

    public EtcdCluster(IReadOnlyList<string> endpoints, bool ownConnections = false)
    {
        if (endpoints.Count == 0) throw new DirectoryException("an etcd directory needs at least one endpoint");
        _endpoints = [.. endpoints];
        var invokers = _endpoints
            .Select(e => (ownConnections ? Channels.Create(e) : Channels.For(e)).CreateCallInvoker()).ToArray();
        _clients = [.. invokers.Select(i => new EtcdClient(i))];
        _watchers = [.. invokers.Select(i => new Watch.WatchClient(i))];
        _leases = [.. invokers.Select(i => new Lease.LeaseClient(i))];
    }

    public string Describe() => "etcd at " + string.Join(", ", _endpoints);

    /// <summary>The member calls go to now, for a caller that needs a stream (watch, lease keep-alive).</summary>
    public (Watch.WatchClient Watch, Lease.LeaseClient Lease, int Index) Member()
    {
        var i = Volatile.Read(ref _current);
        return (_watchers[i], _leases[i], i);
    }

    /// <summary>
    /// Member <paramref name="index"/> failed: calls go to the next one (unless another caller moved on).
    /// </summary>
    public void Failed(int index) => Interlocked.CompareExchange(ref _current, (index + 1) % _clients.Length, index);

    /// <summary>
    /// Runs a unary call, moving from member to member while they are unreachable. A call whose
    /// answer was lost with its member may have been applied: the caller settles that (see
    /// <see cref="EtcdDirectory"/>), as a retried transaction then fails its compare.
    /// </summary>
    public async Task<T> Call<T>(Func<EtcdClient, CancellationToken, Task<T>> f, CancellationToken ct,
        Tries? tries = null)
    {
        var clock = Stopwatch.StartNew();
        var delay = FirstDelay;
        while (true)
        {
            var i = Volatile.Read(ref _current);
            try
            {
                return await f(_clients[i], ct);
            }
            catch (RpcException e) when (Transient(e) && clock.Elapsed + delay < RetryBudget)
            {
                Failed(i);
                tries?.Retried = true;
                await Task.Delay(delay, ct);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxDelay.Ticks));
            }
            catch (RpcException e)
            {
                throw Fail(e);
            }
        }
    }

    public DirectoryException Fail(RpcException e) => Transient(e)
        ? new DirectoryException($"cannot reach {Describe()} (kept trying for {RetryBudget.TotalSeconds:0} s): " +
            e.Status.Detail)
        : new DirectoryException($"{Describe()} refused: {e.Status.Detail}");

    /// <summary>
    /// Whether another member (or this one, shortly) may answer: unreachable, or no leader yet
    /// ("etcdserver: leader changed", "no leader" come as Unavailable or Unknown).
    /// </summary>
    public static bool Transient(RpcException e) =>
        e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded
        || (e.StatusCode == StatusCode.Unknown && e.Status.Detail.Contains("leader", StringComparison.Ordinal))
        || (e.StatusCode == StatusCode.Internal
            && e.Status.DebugException is IOException or HttpRequestException or SocketException);
}

/// <summary>Whether a call was sent more than once (so an earlier attempt may have been applied).</summary>
internal sealed class Tries
{
    public bool Retried { get; set; }
}
