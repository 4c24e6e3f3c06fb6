using System.Collections.Immutable;
using Capsule.Core;
using Mvccpb;

namespace Capsule.Dir.Etcd;

/// <summary>
/// The directory as a watcher of etcd keeps it: a range read gives the first state, each watch event
/// then changes one record (O(log n): the dictionaries are immutable and share all they do not change),
/// so a change costs in proportion to itself, never to the number of capsules.
/// </summary>
internal sealed class EtcdView(EtcdKeys keys)
{
    Prefix? _pool;
    ImmutableSortedDictionary<string, HostRecord> _hosts = ImmutableSortedDictionary<string, HostRecord>.Empty;
    ImmutableSortedDictionary<string, CapsuleRecord> _capsules =
        ImmutableSortedDictionary<string, CapsuleRecord>.Empty;
    ImmutableSortedSet<string> _alive = ImmutableSortedSet<string>.Empty;
    // Worked out again only after a host or liveness change: a capsule's change must not cost O(hosts).
    ImmutableSortedSet<string>? _unreachable;

    /// <summary>The etcd revision this view is at: a watch resumes after it, missing and repeating nothing.</summary>
    public long Revision { get; private set; }

    public static EtcdView From(EtcdKeys keys, IEnumerable<KeyValue> kvs, long revision)
    {
        var v = new EtcdView(keys) { Revision = revision };
        foreach (var kv in kvs) _ = v.Put(kv);
        return v;
    }

    /// <summary>
    /// Applies one watch event; the view's revision moves to the event's. Returns the change of a
    /// host or capsule record (null for the pool, liveness and the address indexes).
    /// </summary>
    public DirectoryChange? Apply(Event e)
    {
        Revision = Math.Max(Revision, e.Kv.ModRevision);
        return e.Type == Event.Types.EventType.Put ? Put(e.Kv) : Delete(e.Kv);
    }

    public DirectoryState State => new(_pool ?? throw NoPool(keys), Revision, _hosts, _capsules)
    {
        Unreachable = _unreachable ??= _hosts.Keys.Where(h => !_alive.Contains(h)).ToImmutableSortedSet(),
    };

    public static DirectoryException NoPool(EtcdKeys keys) => new(
        $"the etcd directory under {keys.Prefix} has no locator pool yet; " +
        "run `capsule directory init --etcd ENDPOINTS --pool PREFIX` once");

    DirectoryChange? Put(KeyValue kv)
    {
        var (kind, name) = keys.Parse(kv.Key);
        switch (kind)
        {
            case "pool":
                _pool = Prefix.Parse(kv.Value.ToStringUtf8());
                return null;
            case "hosts":
                var h = EtcdJson.Host(name, kv.Value);
                _hosts = _hosts.SetItem(name, h);
                _unreachable = null;
                return new DirectoryChange(kv.ModRevision, ChangeKind.HostPut, h, null);
            case "capsules":
                var c = EtcdJson.Capsule(name, kv.Value, kv.ModRevision);
                _capsules = _capsules.SetItem(name, c);
                return new DirectoryChange(kv.ModRevision, ChangeKind.CapsulePut, null, c);
            case "alive":
                _alive = _alive.Add(name);
                _unreachable = null;
                return null;
            default:
                return null;
        }
    }

    /// <summary>A delete event carries no value: the change names the record as this view last had it.</summary>
    DirectoryChange? Delete(KeyValue kv)
    {
        var (kind, name) = keys.Parse(kv.Key);
        switch (kind)
        {
            case "hosts" when _hosts.TryGetValue(name, out var h):
                _hosts = _hosts.Remove(name);
                _unreachable = null;
                return new DirectoryChange(kv.ModRevision, ChangeKind.HostDeleted, h, null);
            case "capsules" when _capsules.TryGetValue(name, out var c):
                _capsules = _capsules.Remove(name);
                return new DirectoryChange(kv.ModRevision, ChangeKind.CapsuleDeleted, null,
                    c with { Revision = kv.ModRevision });
            case "alive":
                _alive = _alive.Remove(name);
                _unreachable = null;
                return null;
            default:
                return null;
        }
    }
}
