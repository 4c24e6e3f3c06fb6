using Capsule.Core;
using Etcdserverpb;
using Google.Protobuf;

namespace Capsule.Dir.Etcd;

/// <summary>Filling an empty etcd directory from a whole state (another store's, or a benchmark's).</summary>
public sealed partial class EtcdDirectory
{
    /// <summary>etcd refuses a transaction of more than 128 operations (its --max-txn-ops default).</summary>
    const int OpsPerTxn = 100;

    /// <summary>
    /// Writes every host and capsule of <paramref name="state"/> with their address keys, in
    /// transactions of <see cref="OpsPerTxn"/> operations. Only into an empty directory (a pool and
    /// nothing else): it does not merge. Capsule revisions become etcd's own.
    /// </summary>
    public async Task ImportAsync(DirectoryState state, CancellationToken ct = default)
    {
        await InitAsync(state.Pool, ct);
        var now = await SnapshotAsync(ct);
        if (now.Hosts.Count > 0 || now.Capsules.Count > 0)
            throw new DirectoryException($"the etcd directory under {_keys.Prefix} is not empty; import fills only " +
                "an empty one");
        var ops = new List<RequestOp>();
        foreach (var h in state.Hosts.Values)
        {
            ops.Add(Put(_keys.Host(h.Name), EtcdJson.Encode(h)));
            ops.Add(Put(_keys.Underlay(h.Underlay), ByteString.CopyFromUtf8(h.Name)));
        }
        foreach (var c in state.Capsules.Values)
        {
            ops.Add(Put(_keys.Capsule(c.Name), EtcdJson.Encode(c)));
            ops.Add(Put(_keys.Locator(c.Locator), ByteString.CopyFromUtf8(c.Name)));
        }
        foreach (var chunk in ops.Chunk(OpsPerTxn))
        {
            var txn = new TxnRequest();
            txn.Success.AddRange(chunk);
            await Txn(txn, ct);
        }
    }
}
