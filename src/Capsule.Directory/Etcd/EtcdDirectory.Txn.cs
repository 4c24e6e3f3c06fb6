using Etcdserverpb;
using Google.Protobuf;
using static Etcdserverpb.Compare.Types;

namespace Capsule.Dir.Etcd;

/// <summary>The few etcd requests the directory is made of: reads, compares and puts by key.</summary>
public sealed partial class EtcdDirectory
{
    Task<TxnResponse> Txn(TxnRequest txn, CancellationToken ct, Tries? tries = null) =>
        _cluster.Call((c, t) => c.TransactionAsync(txn, cancellationToken: t), ct, tries);

    /// <summary>One key's value and mod revision; (null, 0) when it does not exist.</summary>
    async Task<(ByteString? Value, long Revision)> ReadAsync(ByteString key, CancellationToken ct)
    {
        var r = await _cluster.Call((c, t) => c.GetAsync(new RangeRequest { Key = key }, cancellationToken: t), ct);
        return r.Kvs.Count == 0 ? (null, 0) : (r.Kvs[0].Value, r.Kvs[0].ModRevision);
    }

    static Compare Absent(ByteString key) =>
        new() { Key = key, Target = CompareTarget.Create, Result = CompareResult.Equal, CreateRevision = 0 };

    static Compare Present(ByteString key) =>
        new() { Key = key, Target = CompareTarget.Create, Result = CompareResult.Greater, CreateRevision = 0 };

    static Compare ModIs(ByteString key, long revision) =>
        new() { Key = key, Target = CompareTarget.Mod, Result = CompareResult.Equal, ModRevision = revision };

    static Compare ValueIs(ByteString key, ByteString value) =>
        new() { Key = key, Target = CompareTarget.Value, Result = CompareResult.Equal, Value = value };

    static RequestOp Put(ByteString key, ByteString value, long lease = 0) =>
        new() { RequestPut = new PutRequest { Key = key, Value = value, Lease = lease } };

    static RequestOp Delete(ByteString key) => new() { RequestDeleteRange = new DeleteRangeRequest { Key = key } };

    static RequestOp Get(ByteString key) => new() { RequestRange = new RangeRequest { Key = key } };
}
