namespace Capsule.Core.Tests;

public class PlacementTests
{
    const long GiB = 1L << 30;
    const long MiB = 1L << 20;

    static HostLoad Host(string name, int capsules, long free = 4 * GiB, double cpus = 2) =>
        new(name, free, cpus, capsules);

    static IEnumerable<PlacementItem> Capsules(int n, long each = 50 * MiB) =>
        Enumerable.Range(0, n).Select(i => new PlacementItem($"c{i}", each));

    [Fact]
    public void Six_capsules_to_two_empty_hosts_go_three_and_three()
    {
        var plan = Placement.Plan([Host("h1", 6), Host("h2", 0), Host("h3", 0)], "h1", Capsules(6));
        Assert.All(plan, p => Assert.NotNull(p.Host));
        Assert.Equal(3, plan.Count(p => p.Host == "h2"));
        Assert.Equal(3, plan.Count(p => p.Host == "h3"));
    }

    [Fact]
    public void The_host_with_fewer_capsules_fills_up_first()
    {
        var plan = Placement.Plan([Host("h1", 3), Host("h2", 4), Host("h3", 1)], "h1", Capsules(3));
        Assert.Equal(["h3", "h3", "h3"], plan.Select(p => p.Host));
    }

    [Fact]
    public void Equal_counts_go_to_the_host_with_more_free_memory_then_more_cpu()
    {
        Assert.Equal("h3", Placement.Choose([Host("h2", 1, 2 * GiB), Host("h3", 1, 3 * GiB)], "h1", MiB)!.Name);
        Assert.Equal("h2", Placement.Choose([Host("h2", 1, GiB, 1.5), Host("h3", 1, GiB, 0.5)], "h1", MiB)!.Name);
    }

    [Fact]
    public void Cordoned_hosts_and_the_drained_host_never_take_one_and_the_reason_says_so()
    {
        var hosts = new[] { Host("h1", 2), Host("h2", 0) with { Eligible = false } };
        var plan = Placement.Plan(hosts, "h1", Capsules(2));
        Assert.All(plan, p => Assert.Null(p.Host));
        Assert.Contains("cordoned", plan[0].Why);
    }

    [Fact]
    public void A_capsule_bigger_than_any_host_can_take_is_not_placed_and_the_reason_names_sizes()
    {
        var plan = Placement.Plan([Host("h1", 1), Host("h2", 0, 200 * MiB)], "h1", [new("big", 500 * MiB)]);
        Assert.Null(plan[0].Host);
        Assert.Contains("500 MiB", plan[0].Why);
        Assert.Contains("200 MiB", plan[0].Why);
    }

    static readonly Gen<HostLoad[]> GenHosts =
        Gen.Select(Gen.Int[0, 6], Gen.Long[0, 2048], Gen.Double[0, 4], Gen.Bool)
            .Select((n, mib, cpu, ok) => (n, mib, cpu, ok))
            .Array[1, 6]
            .Select(a => a.Select((h, i) => new HostLoad($"h{i}", h.mib * MiB, h.cpu, h.n) { Eligible = h.ok })
                .ToArray());

    [Fact]
    public void Never_the_drained_or_an_ineligible_host_and_never_beyond_a_hosts_free_memory()
    {
        Gen.Select(GenHosts, Gen.Long[1, 600].Array[0, 12]).Sample((hosts, sizes) =>
        {
            var items = sizes.Select((s, i) => new PlacementItem($"c{i}", s * MiB)).ToList();
            var plan = Placement.Plan(hosts, "h0", items);
            Assert.Equal(items.Count, plan.Count);
            foreach (var h in hosts)
            {
                var mine = plan.Where(p => p.Host == h.Name).Select(p => items.Single(i => i.Capsule == p.Capsule))
                    .ToList();
                if (!h.Eligible || h.Name == "h0") Assert.Empty(mine);
                else if (mine.Count > 0)
                    Assert.True(h.FreeMemoryBytes - mine.Sum(i => i.MemoryBytes) >= Placement.MemoryReserve);
            }
            Assert.All(plan, p => Assert.True(p.Host is not null || p.Why is { Length: > 0 }));
        });
    }

    [Fact]
    public void With_memory_to_spare_equal_hosts_end_at_most_one_capsule_apart()
    {
        Gen.Select(Gen.Int[1, 5], Gen.Int[0, 4], Gen.Int[0, 30]).Sample((targets, start, n) =>
        {
            var hosts = Enumerable.Range(1, targets).Select(i => Host($"t{i}", start, 64 * GiB))
                .Append(Host("from", n)).ToList();
            var plan = Placement.Plan(hosts, "from", Capsules(n));
            var counts = hosts.Where(h => h.Name != "from")
                .Select(h => start + plan.Count(p => p.Host == h.Name)).ToList();
            Assert.All(plan, p => Assert.NotNull(p.Host));
            Assert.True(counts.Max() - counts.Min() <= 1, string.Join(",", counts));
        });
    }

    [Fact]
    public void Cordoned_hosts_refuse_creates_and_moves_onto_them_but_not_a_state_change_in_place()
    {
        var s = Dir.WithHosts(Dir.Pool, Dir.H1, Dir.H2).AllocateCapsule("a", "h1").Ok();
        var cordoned = s.PutHost(Dir.H2 with { Cordoned = true }).Ok();
        Assert.Contains("cordoned", cordoned.Fails(cordoned.AllocateCapsule("b", "h2")));
        var rev = cordoned.Capsules["a"].Revision;
        Assert.Contains("uncordon h2", cordoned.Fails(cordoned.UpdateCapsule("a", "h2", CapsuleState.Running, rev)));
        var self = cordoned.PutHost(Dir.H1 with { Cordoned = true }).Ok();
        self.UpdateCapsule("a", "h1", CapsuleState.Running, self.Capsules["a"].Revision).Ok();
    }
}
