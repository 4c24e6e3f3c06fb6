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

    /// <summary>The etcd revision this view is at: a watch resumes after it, missing and repeating nothing.</summary>
    public long Revision { get; private set; }

    public static EtcdView From(EtcdKeys keys, IEnumerable<KeyValue> kvs, long revision)
    {
        var v = new EtcdView(keys) { Revision = revision };
        foreach (var kv in kvs) v.Put(kv);
        return v;
    }

    /// <summary>Applies one watch event; the view's revision moves to the event's.</summary>
    public void Apply(Event e)
    {
        if (e.Type == Event.Types.EventType.Put) Put(e.Kv);
        else Delete(e.Kv);
        Revision = Math.Max(Revision, e.Kv.ModRevision);
    }

    public DirectoryState State => new(_pool ?? throw NoPool(keys), Revision, _hosts, _capsules)
    {
        Unreachable = _hosts.Keys.Where(h => !_alive.Contains(h)).ToImmutableSortedSet(),
    };

    public static DirectoryException NoPool(EtcdKeys keys) => new(
        $"the etcd directory under {keys.Prefix} has no locator pool yet; " +
        "run `capsule directory init --etcd ENDPOINTS --pool PREFIX` once");

    void Put(KeyValue kv)
    {
        var (kind, name) = keys.Parse(kv.Key);
        switch (kind)
        {
            case "pool":
                _pool = Prefix.Parse(kv.Value.ToStringUtf8());
                break;
            case "hosts":
                _hosts = _hosts.SetItem(name, EtcdJson.Host(name, kv.Value));
                break;
            case "capsules":
                _capsules = _capsules.SetItem(name, EtcdJson.Capsule(name, kv.Value, kv.ModRevision));
                break;
            case "alive":
                _alive = _alive.Add(name);
                break;
        }
    }

    void Delete(KeyValue kv)
    {
        var (kind, name) = keys.Parse(kv.Key);
        switch (kind)
        {
            case "hosts":
                _hosts = _hosts.Remove(name);
                break;
            case "capsules":
                _capsules = _capsules.Remove(name);
                break;
            case "alive":
                _alive = _alive.Remove(name);
                break;
        }
    }
}
