namespace Capsule.Core.Tests;

public class DropsTests
{
    [Fact]
    public void Reasons_lists_every_reason_but_none()
    {
        Assert.DoesNotContain(DropReason.None, DropCounters.Reasons);
        Assert.Equal(Enum.GetValues<DropReason>().Length - 1, DropCounters.Reasons.Length);
        Assert.Equal(DropCounters.Reasons.Distinct().Count(), DropCounters.Reasons.Length);
        foreach (var r in Enum.GetValues<DropReason>().Where(r => r != DropReason.None))
            Assert.Contains(r, DropCounters.Reasons);
    }

    [Fact]
    public void Key_gives_distinct_names_for_all_reasons()
    {
        var keys = DropCounters.Reasons.Select(DropCounters.Key).ToList();
        Assert.Equal(keys.Count, keys.Distinct().Count());
        Assert.DoesNotContain("none", keys);
        Assert.All(keys, k => Assert.Matches("^[a-z][a-z_]*$", k));
        Assert.Equal("none", DropCounters.Key(DropReason.None));
        Assert.Equal("bad_version", DropCounters.Key(DropReason.BadVersion));
        Assert.Equal("unknown_host", DropCounters.Key(DropReason.UnknownHost));
    }

    [Fact]
    public void Counters_start_at_zero_and_count_per_reason()
    {
        var c = new DropCounters();
        foreach (var r in DropCounters.Reasons) Assert.Equal(0, c[r]);

        c.Add(DropReason.Malformed);
        c.Add(DropReason.Malformed);
        c.Add(DropReason.IoError);
        for (var i = 0; i < 1000; i++) c.Add(DropReason.NoRoute);

        Assert.Equal(2, c[DropReason.Malformed]);
        Assert.Equal(1, c[DropReason.IoError]);
        Assert.Equal(1000, c[DropReason.NoRoute]);
        foreach (var r in DropCounters.Reasons.Except([DropReason.Malformed, DropReason.IoError, DropReason.NoRoute]))
            Assert.Equal(0, c[r]);
    }

    [Fact]
    public void Every_reason_has_its_own_slot()
    {
        var c = new DropCounters();
        var all = DropCounters.Reasons;
        for (var i = 0; i < all.Length; i++)
            for (var n = 0; n <= i; n++) c.Add(all[i]);
        for (var i = 0; i < all.Length; i++)
            Assert.Equal(i + 1, c[all[i]]);
        Assert.Equal(0, c[DropReason.None]);
    }

    [Fact]
    public void Instances_are_independent()
    {
        var a = new DropCounters();
        var b = new DropCounters();
        a.Add(DropReason.TooBig);
        Assert.Equal(1, a[DropReason.TooBig]);
        Assert.Equal(0, b[DropReason.TooBig]);
    }
}
