using Capsule.Core;
using Etcdserverpb;
using Google.Protobuf;
using static Etcdserverpb.Compare.Types;

namespace Capsule.Dir.Etcd;

/// <summary>
/// The directory kept in an etcd cluster (the real server, reached with dotnet-etcd), for clusters
/// of real machines: no single directory process to lose. Every change is one etcd transaction
/// conditioned on what the writer read, so the rules of <see cref="DirectoryState"/> hold across
/// writers: one owner per capsule, one capsule per locator. Agents watch the prefix from a revision
/// (<see cref="WatchAsync"/>) and hold a lease that says they are alive (<see cref="HostLease"/>).
/// </summary>
public sealed partial class EtcdDirectory : IDirectory, IAsyncDisposable
{
    /// <summary>A transaction that lost a race is read again and retried this many times.</summary>
    const int Attempts = 16;

    readonly EtcdCluster _cluster;
    readonly EtcdKeys _keys;
    readonly TimeSpan _leaseTtl;
    HostLease? _lease;

    public EtcdDirectory(IReadOnlyList<string> endpoints, string prefix = EtcdKeys.DefaultPrefix,
        TimeSpan? leaseTtl = null, bool ownConnections = false)
    {
        _cluster = new EtcdCluster(endpoints, ownConnections);
        _keys = new EtcdKeys(prefix);
        _leaseTtl = leaseTtl ?? HostLease.DefaultTtl;
    }

    public string Describe() => _cluster.Describe();

    /// <summary>The key prefix this directory lives under.</summary>
    public string KeyPrefix => _keys.Prefix;

    /// <summary>
    /// Writes the locator pool once; a second init with the same pool is a no-op, another pool an error.
    /// </summary>
    public async Task InitAsync(Prefix pool, CancellationToken ct = default)
    {
        var txn = new TxnRequest();
        txn.Compare.Add(Absent(_keys.Pool));
        txn.Success.Add(Put(_keys.Pool, ByteString.CopyFromUtf8(pool.ToString())));
        txn.Failure.Add(Get(_keys.Pool));
        var r = await Txn(txn, ct);
        if (r.Succeeded) return;
        var have = r.Responses[0].ResponseRange.Kvs[0].Value.ToStringUtf8();
        if (have != pool.ToString())
            throw new DirectoryException(
                $"the etcd directory under {_keys.Prefix} already has pool {have}, not {pool}");
    }

    public async Task<DirectoryState> SnapshotAsync(CancellationToken ct = default) => (await ViewAsync(ct)).State;

    async Task<EtcdView> ViewAsync(CancellationToken ct)
    {
        var r = await _cluster.Call((c, t) => c.GetAsync(
            new RangeRequest { Key = _keys.All, RangeEnd = _keys.AllEnd }, cancellationToken: t), ct);
        return EtcdView.From(_keys, r.Kvs, r.Header.Revision);
    }

    public async Task PutHostAsync(HostRecord host, CancellationToken ct = default)
    {
        if (Names.HostNameError(host.Name) is { } e) throw new DirectoryException(e);
        if (host.ServesError is { } s) throw new DirectoryException(s);
        for (var attempt = 0; attempt < Attempts; attempt++)
        {
            var (old, oldRev) = await ReadAsync(_keys.Host(host.Name), ct);
            var (owner, _) = await ReadAsync(_keys.Underlay(host.Underlay), ct);
            var ownerName = owner?.ToStringUtf8();
            if (ownerName is not null && ownerName != host.Name)
                throw new DirectoryException($"underlay address {host.Underlay} already belongs to host '{ownerName}'");
            var oldHost = old is null ? null : EtcdJson.Host(host.Name, old);
            if (oldHost != host)
            {
                var txn = new TxnRequest();
                txn.Compare.Add(old is null ? Absent(_keys.Host(host.Name)) : ModIs(_keys.Host(host.Name), oldRev));
                txn.Compare.Add(ownerName is null ? Absent(_keys.Underlay(host.Underlay))
                    : ValueIs(_keys.Underlay(host.Underlay), owner!));
                txn.Success.Add(Put(_keys.Host(host.Name), EtcdJson.Encode(host)));
                txn.Success.Add(Put(_keys.Underlay(host.Underlay), ByteString.CopyFromUtf8(host.Name)));
                if (oldHost is not null && oldHost.Underlay != host.Underlay)
                    txn.Success.Add(Delete(_keys.Underlay(oldHost.Underlay)));
                if (!(await Txn(txn, ct)).Succeeded) continue; // another writer got there first: read again
            }
            _lease ??= new HostLease(_cluster, _keys.Alive(host.Name), _leaseTtl);
            await _lease.StartAsync(ct);
            return;
        }
        throw Busy("host", host.Name);
    }

    public async Task DeleteHostAsync(string name, CancellationToken ct = default)
    {
        for (var attempt = 0; attempt < Attempts; attempt++)
        {
            var view = await ViewAsync(ct);
            var rule = view.State.DeleteHost(name);
            if (!rule.Ok) throw new DirectoryException(rule.Error!);
            var (_, rev) = await ReadAsync(_keys.Host(name), ct);
            var txn = new TxnRequest();
            txn.Compare.Add(ModIs(_keys.Host(name), rev));
            txn.Success.Add(Delete(_keys.Host(name)));
            txn.Success.Add(Delete(_keys.Underlay(rule.Change!.Host!.Underlay)));
            txn.Success.Add(Delete(_keys.Alive(name)));
            if ((await Txn(txn, ct)).Succeeded) return;
        }
        throw Busy("host", name);
    }

    /// <summary>
    /// Reserves the lowest free locator: chosen from a snapshot by the pure rules, then claimed in one
    /// transaction that creates both the capsule's key and the locator's, only if neither exists and
    /// the host does. Of two allocations racing for one locator exactly one commits; the other reads
    /// again and takes the next.
    /// </summary>
    public async Task<CapsuleRecord> AllocateAsync(string name, string host, CancellationToken ct = default)
    {
        var tries = new Tries();
        for (var attempt = 0; attempt < Attempts; attempt++)
        {
            var state = await SnapshotAsync(ct);
            // After a lost race, a random one of the lowest 2^attempt free locators: racers spread out.
            var skip = attempt == 0 ? 0 : Random.Shared.Next(1 << Math.Min(attempt, 10));
            var rule = state.AllocateCapsule(name, host, skip);
            if (!rule.Ok)
            {
                // Our own earlier attempt may have committed before its answer was lost.
                if (tries.Retried && state.Capsules.GetValueOrDefault(name) is { State: CapsuleState.Creating } c
                    && c.Host == host)
                    return c;
                throw new DirectoryException(rule.Error!);
            }
            var rec = rule.Change!.Capsule!;
            var txn = new TxnRequest();
            txn.Compare.Add(Absent(_keys.Capsule(name)));
            txn.Compare.Add(Absent(_keys.Locator(rec.Locator)));
            txn.Compare.Add(Present(_keys.Host(host)));
            txn.Success.Add(Put(_keys.Capsule(name), EtcdJson.Encode(rec)));
            txn.Success.Add(Put(_keys.Locator(rec.Locator), ByteString.CopyFromUtf8(name)));
            var r = await Txn(txn, ct, tries);
            if (r.Succeeded) return rec with { Revision = r.Header.Revision };
        }
        throw Busy("capsule", name);
    }

    public async Task<CapsuleRecord> UpdateAsync(string name, string host, CapsuleState state, long expectRevision,
        string? detail = null, CancellationToken ct = default)
    {
        if (expectRevision <= 0)
            throw new DirectoryException(
                $"an update of capsule '{name}' must name the revision it was read at (got {expectRevision})");
        var tries = new Tries();
        var (value, rev) = await ReadAsync(_keys.Capsule(name), ct);
        if (value is null) throw new DirectoryException($"no capsule named '{name}'");
        var cur = EtcdJson.Capsule(name, value, rev);
        if (rev != expectRevision) throw Changed(cur, expectRevision);
        var rec = cur with { Host = host, State = state, Detail = detail };
        var txn = new TxnRequest();
        txn.Compare.Add(ModIs(_keys.Capsule(name), expectRevision));
        if (state != CapsuleState.Suspended) txn.Compare.Add(Present(_keys.Host(host)));
        txn.Success.Add(Put(_keys.Capsule(name), EtcdJson.Encode(rec)));
        var r = await Txn(txn, ct, tries);
        if (r.Succeeded) return rec with { Revision = r.Header.Revision };
        var (nowValue, nowRev) = await ReadAsync(_keys.Capsule(name), ct);
        if (nowValue is null) throw new DirectoryException($"no capsule named '{name}'");
        var now = EtcdJson.Capsule(name, nowValue, nowRev);
        if (nowRev == expectRevision) throw new DirectoryException($"no host named '{host}'");
        // Our own earlier attempt moved the revision on: the record shows exactly what we asked for.
        if (tries.Retried && now.Host == host && now.State == state && now.Detail == detail) return now;
        throw Changed(now, expectRevision);
    }

    public async Task ReleaseAsync(string name, CancellationToken ct = default)
    {
        var tries = new Tries();
        for (var attempt = 0; attempt < Attempts; attempt++)
        {
            var (value, rev) = await ReadAsync(_keys.Capsule(name), ct);
            if (value is null)
            {
                if (tries.Retried) return; // our own earlier attempt released it
                throw new DirectoryException($"no capsule named '{name}'");
            }
            var cur = EtcdJson.Capsule(name, value, rev);
            var txn = new TxnRequest();
            txn.Compare.Add(ModIs(_keys.Capsule(name), rev));
            txn.Success.Add(Delete(_keys.Capsule(name)));
            txn.Success.Add(Delete(_keys.Locator(cur.Locator)));
            if ((await Txn(txn, ct, tries)).Succeeded) return;
        }
        throw Busy("capsule", name);
    }

    /// <summary>Ends this host's liveness lease, if it holds one: revoked, so the host shows unreachable now.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_lease is not null) await _lease.DisposeAsync();
    }

    /// <summary>Stops renewing the liveness lease and leaves it to lapse, as a dead agent's (tests).</summary>
    internal async Task AbandonLeaseAsync()
    {
        if (_lease is not null) await _lease.AbandonAsync();
    }

    static DirectoryException Changed(CapsuleRecord cur, long expected)
    {
        var now = cur.State.ToString().ToLowerInvariant();
        return new DirectoryException($"capsule '{cur.Name}' changed meanwhile: it is now {now} on {cur.Host} " +
            $"(revision {cur.Revision}, expected {expected}); read it again before changing it", conflict: true);
    }

    static DirectoryException Busy(string kind, string name) => new(
        $"{kind} '{name}' kept changing under {Attempts} attempts to write it; try again", conflict: true);
}
