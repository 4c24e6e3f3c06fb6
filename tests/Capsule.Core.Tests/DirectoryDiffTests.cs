namespace Capsule.Core.Tests;

public class DirectoryDiffTests
{
    static readonly HostRecord H4 = new("h4", Locator.Parse("10.0.0.4"), "10.0.0.4:7471");

    static IReadOnlyList<DirectoryEvent> Seen(string self, DirectoryState before, DirectoryState after) =>
        DirectoryDiff.ReportedBy(self, before, after);

    /// <summary>
    /// What every host of <paramref name="hosts"/> reports, together: each change must be there once.
    /// </summary>
    static List<DirectoryEvent> All(DirectoryState before, DirectoryState after, params string[] hosts) =>
        hosts.SelectMany(h => Seen(h, before, after)).ToList();

    [Fact]
    public void A_host_that_joins_is_reported_once_by_the_first_host_that_saw_it()
    {
        var before = Dir.WithHosts(null, Dir.H2, Dir.H3);
        var after = before.PutHost(Dir.H1).Ok();
        // h1 is first by name but joined itself; h2 reports it.
        Assert.Equal([new DirectoryEvent(MembershipChange.HostJoined, "h1")], Seen("h2", before, after));
        Assert.Empty(Seen("h3", before, after));
        Assert.Empty(Seen("h1", before, after));
    }

    [Fact]
    public void A_host_that_leaves_is_reported_once_by_a_host_still_there()
    {
        var before = Dir.WithHosts(null, Dir.H1, Dir.H2, Dir.H3);
        var after = before.DeleteHost("h1").Ok();
        Assert.Equal([new DirectoryEvent(MembershipChange.HostLeft, "h1")], All(before, after, "h1", "h2", "h3"));
        Assert.Equal([new DirectoryEvent(MembershipChange.HostLeft, "h1")], Seen("h2", before, after));
    }

    [Fact]
    public void The_same_state_again_reports_nothing()
    {
        var s = Dir.WithHosts(null, Dir.H1, Dir.H2).AllocateCapsule("web", "h2").Ok();
        Assert.Empty(All(s, s, "h1", "h2"));
    }

    [Fact]
    public void A_capsule_created_or_removed_is_reported_by_its_host()
    {
        var hosts = Dir.WithHosts(null, Dir.H1, Dir.H2, Dir.H3);
        var created = hosts.AllocateCapsule("web", "h2").Ok();
        var loc = created.Capsules["web"].Locator;
        var made = new DirectoryEvent(MembershipChange.CapsuleCreated, "web", "h2", loc);
        Assert.Equal([made], Seen("h2", hosts, created));
        Assert.Equal([made], All(hosts, created, "h1", "h2", "h3"));
        var removed = created.ReleaseCapsule("web").Ok();
        var gone = new DirectoryEvent(MembershipChange.CapsuleRemoved, "web", "h2", loc);
        Assert.Equal([gone], Seen("h2", created, removed));
        Assert.Equal([gone], All(created, removed, "h1", "h2", "h3"));
    }

    [Fact]
    public void A_capsule_whose_host_left_with_it_is_reported_by_the_witness()
    {
        var before = Dir.WithHosts(null, Dir.H1, Dir.H2, Dir.H3).AllocateCapsule("web", "h1").Ok();
        var after = before.ReleaseCapsule("web").Ok().DeleteHost("h1").Ok();
        var events = All(before, after, "h1", "h2", "h3");
        Assert.Equal(2, events.Count);
        Assert.Contains(new DirectoryEvent(MembershipChange.HostLeft, "h1"), events);
        Assert.Contains(events, e => e is { Kind: MembershipChange.CapsuleRemoved, Name: "web", Host: "h1" });
        Assert.Equal(2, Seen("h2", before, after).Count);
    }

    [Fact]
    public void A_moved_capsule_is_neither_created_nor_removed()
    {
        var before = Dir.WithHosts(null, Dir.H1, Dir.H2).AllocateCapsule("web", "h1").Ok();
        var after = before.UpdateRead("web", "h2", CapsuleState.Running).Ok();
        Assert.Empty(All(before, after, "h1", "h2"));
    }

    [Fact]
    public void Every_change_is_reported_exactly_once_by_the_hosts_that_watched_it()
    {
        // Random steps over four hosts and three capsules; whatever changed between two states,
        // the hosts present in both report each change once between them.
        string[] names = ["h1", "h2", "h3", "h4"];
        HostRecord[] records = [Dir.H1, Dir.H2, Dir.H3, H4];
        Gen.Select(Gen.Int[0, 3], Gen.Int[0, 3], Gen.Int[0, 2]).Array[1, 40].Sample(steps =>
        {
            var s = Dir.WithHosts(null, Dir.H1);
            foreach (var (op, host, capsule) in steps)
            {
                var before = s;
                var name = names[host];
                var c = $"c{capsule}";
                var r = op switch
                {
                    0 => s.PutHost(records[host]),
                    1 => s.DeleteHost(name),
                    2 => s.AllocateCapsule(c, name),
                    _ => s.ReleaseCapsule(c),
                };
                if (r.Ok) s = r.State;
                var watchers = names.Where(h => before.Hosts.ContainsKey(h) && s.Hosts.ContainsKey(h)).ToArray();
                var events = All(before, s, watchers);
                var expected = s.Hosts.Keys.Except(before.Hosts.Keys).Count()
                    + before.Hosts.Keys.Except(s.Hosts.Keys).Count()
                    + s.Capsules.Keys.Except(before.Capsules.Keys).Count()
                    + before.Capsules.Keys.Except(s.Capsules.Keys).Count();
                // Nobody is left to report what changed when no host watched before and after.
                Assert.Equal(watchers.Length == 0 ? 0 : expected, events.Count);
                Assert.Equal(events.Count, events.Distinct().Count());
                // Looking only at the change a watcher is sent finds exactly what comparing whole states finds.
                if (r is { Ok: true, Change: { } change })
                    foreach (var w in names)
                        Assert.Equal(DirectoryDiff.ReportedBy(w, before, s),
                            DirectoryDiff.ReportedBy(w, before, s, [change]));
            }
        });
    }
}
