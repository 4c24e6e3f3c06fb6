using System.Collections.Immutable;
using Capsule.Core;
using Capsule.Protos;
using CoreState = Capsule.Core.CapsuleState;
using WireState = Capsule.Protos.CapsuleState;

namespace Capsule.Dir;

/// <summary>Conversions between the core's records and their gRPC messages.</summary>
public static class Mapping
{
    public static Host ToWire(this HostRecord h) => new()
    {
        Name = h.Name, Underlay = h.Underlay.ToString(), AgentEndpoint = h.AgentEndpoint, Serves = h.Serves,
        Cordoned = h.Cordoned,
    };
    public static HostRecord ToCore(this Host h) =>
        new(h.Name, Locator.Parse(h.Underlay), h.AgentEndpoint, h.Serves, h.Cordoned);

    public static CapsuleEntry ToWire(this CapsuleRecord c) => new()
    {
        Name = c.Name, Locator = c.Locator.ToString(), Host = c.Host, State = (WireState)c.State, Revision = c.Revision,
        Detail = c.Detail ?? "",
    };

    public static CapsuleRecord ToCore(this CapsuleEntry c) =>
        new(c.Name, Locator.Parse(c.Locator), c.Host, (CoreState)c.State, c.Revision)
            { Detail = c.Detail.Length == 0 ? null : c.Detail };

    public static Snapshot ToWire(this DirectoryState s)
    {
        var snap = new Snapshot { Pool = s.Pool.ToString(), Revision = s.Revision };
        foreach (var h in s.Hosts.Values) snap.Hosts.Add(h.ToWire());
        foreach (var c in s.Capsules.Values) snap.Capsules.Add(c.ToWire());
        return snap;
    }

    public static DirectoryState ToCore(this Snapshot s) => new(
        Prefix.Parse(s.Pool), s.Revision,
        s.Hosts.Select(ToCore).ToImmutableSortedDictionary(h => h.Name, h => h),
        s.Capsules.Select(ToCore).ToImmutableSortedDictionary(c => c.Name, c => c));

    public static Change ToWire(this DirectoryChange c) => new()
    {
        Revision = c.Revision, Kind = (Protos.ChangeKind)c.Kind, Host = c.Host?.ToWire(), Capsule = c.Capsule?.ToWire(),
    };

    public static DirectoryChange ToCore(this Change c) => new(c.Revision, (Core.ChangeKind)c.Kind,
        c.Host?.ToCore(), c.Capsule?.ToCore());

    public static string Word(this CoreState s) => s.ToString().ToLowerInvariant();
}
