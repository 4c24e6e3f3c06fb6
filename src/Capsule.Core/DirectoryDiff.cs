namespace Capsule.Core;

public enum MembershipChange { HostJoined, HostLeft, CapsuleCreated, CapsuleRemoved }

/// <summary>
/// A host or capsule that appeared in the directory or left it. <see cref="Name"/> is the host's
/// or the capsule's; for a capsule, <see cref="Host"/> is the host it is on (or was on) and
/// <see cref="Locator"/> its address.
/// </summary>
public readonly record struct DirectoryEvent(MembershipChange Kind, string Name, string Host = "",
    Locator Locator = default);

/// <summary>
/// Which directory changes a host reports. Every agent watches the directory and sees the same
/// changes; `capsule events` asks every agent, so each change must be reported by exactly one.
/// A capsule's by the host it is (or was) on; a host's, and a capsule's whose host is gone, by a
/// witness: the first host by name (ordinal) of those in both states, the changed host aside.
/// Only hosts in both states qualify, since only they watched the change happen.
/// </summary>
public static class DirectoryDiff
{
    public static IReadOnlyList<DirectoryEvent> ReportedBy(string self, DirectoryState before, DirectoryState after)
    {
        var events = new List<DirectoryEvent>();
        foreach (var name in after.Hosts.Keys)
            if (!before.Hosts.ContainsKey(name) && Witness(before, after, name) == self)
                events.Add(new DirectoryEvent(MembershipChange.HostJoined, name));
        foreach (var name in before.Hosts.Keys)
            if (!after.Hosts.ContainsKey(name) && Witness(before, after, name) == self)
                events.Add(new DirectoryEvent(MembershipChange.HostLeft, name));
        foreach (var (name, c) in after.Capsules)
            if (!before.Capsules.ContainsKey(name) && Reporter(before, after, c.Host) == self)
                events.Add(new DirectoryEvent(MembershipChange.CapsuleCreated, name, c.Host, c.Locator));
        foreach (var (name, c) in before.Capsules)
            if (!after.Capsules.ContainsKey(name) && Reporter(before, after, c.Host) == self)
                events.Add(new DirectoryEvent(MembershipChange.CapsuleRemoved, name, c.Host, c.Locator));
        return events;
    }

    /// <summary>
    /// The same, looking only at the records <paramref name="changes"/> name: O(changes), not
    /// O(capsules), for a watcher that is sent changes (a whole state goes through the method above).
    /// </summary>
    public static IReadOnlyList<DirectoryEvent> ReportedBy(string self, DirectoryState before, DirectoryState after,
        IEnumerable<DirectoryChange> changes)
    {
        var events = new List<DirectoryEvent>();
        var seen = new HashSet<(bool Host, string Name)>();
        foreach (var change in changes)
        {
            if (change.Host is { } h && seen.Add((true, h.Name)))
            {
                var (was, @is) = (before.Hosts.ContainsKey(h.Name), after.Hosts.ContainsKey(h.Name));
                if (was != @is && Witness(before, after, h.Name) == self)
                    events.Add(new DirectoryEvent(@is ? MembershipChange.HostJoined : MembershipChange.HostLeft,
                        h.Name));
            }
            if (change.Capsule is { } c && seen.Add((false, c.Name)))
            {
                var old = before.Capsules.GetValueOrDefault(c.Name);
                var now = after.Capsules.GetValueOrDefault(c.Name);
                if (old is null && now is not null && Reporter(before, after, now.Host) == self)
                    events.Add(new DirectoryEvent(MembershipChange.CapsuleCreated, c.Name, now.Host, now.Locator));
                if (old is not null && now is null && Reporter(before, after, old.Host) == self)
                    events.Add(new DirectoryEvent(MembershipChange.CapsuleRemoved, c.Name, old.Host, old.Locator));
            }
        }
        return events;
    }

    static bool InBoth(DirectoryState before, DirectoryState after, string host) =>
        before.Hosts.ContainsKey(host) && after.Hosts.ContainsKey(host);

    static string? Reporter(DirectoryState before, DirectoryState after, string host) =>
        InBoth(before, after, host) ? host : Witness(before, after, null);

    static string? Witness(DirectoryState before, DirectoryState after, string? changed) =>
        before.Hosts.Keys.Where(h => h != changed && after.Hosts.ContainsKey(h)).Min(StringComparer.Ordinal);
}
