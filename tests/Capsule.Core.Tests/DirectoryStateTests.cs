namespace Capsule.Core.Tests;

public class DirectoryStateTests
{
    static DirectoryState TwoHosts(string pool = "100.64.0.0/16") => Dir.WithHosts(Prefix.Parse(pool), Dir.H1, Dir.H2);

    [Fact]
    public void New_state_is_empty_at_revision_zero()
    {
        var s = new DirectoryState(Dir.Pool);
        Assert.Equal(0, s.Revision);
        Assert.Empty(s.Hosts);
        Assert.Empty(s.Capsules);
        Assert.Equal(Dir.Pool, s.Pool);
    }

    [Fact]
    public void A_skip_takes_a_later_free_locator_and_falls_back_to_the_lowest_when_too_few_are_free()
    {
        var s = TwoHosts("100.64.0.0/29"); // .2 to .6 are handed out
        s = s.AllocateCapsule("a", "h1").Ok();
        Assert.Equal(Locator.Parse("100.64.0.5"), s.AllocateCapsule("b", "h1", skip: 2).Ok().Capsules["b"].Locator);
        Assert.Equal(Locator.Parse("100.64.0.3"), s.AllocateCapsule("b", "h1", skip: 9).Ok().Capsules["b"].Locator);
    }

    [Fact]
    public void Allocation_gives_distinct_locators_inside_the_pool_starting_at_dot_2()
    {
        var s = TwoHosts();
        var seen = new HashSet<Locator>();
        for (var i = 0; i < 300; i++)
        {
            var r = s.AllocateCapsule($"c{i}", i % 2 == 0 ? "h1" : "h2");
            s = r.Ok();
            var rec = s.Capsules[$"c{i}"];
            Assert.True(seen.Add(rec.Locator), $"locator {rec.Locator} handed out twice");
            Assert.True(s.Pool.Contains(rec.Locator));
            Assert.Equal(CapsuleState.Creating, rec.State);
            Assert.Equal(i % 2 == 0 ? "h1" : "h2", rec.Host);
            Assert.Equal(rec, r.Change!.Capsule);
            Assert.Equal(ChangeKind.CapsulePut, r.Change.Kind);
        }
        Assert.Equal(Locator.Parse("100.64.0.2"), s.Capsules["c0"].Locator);
        Assert.Equal(Locator.Parse("100.64.0.3"), s.Capsules["c1"].Locator);
        Assert.Equal(Locator.Parse("100.64.1.0"), s.Capsules["c254"].Locator); // crosses the .255 of a /24 inside a /16
        Assert.DoesNotContain(Locator.Parse("100.64.0.0"), seen);
        Assert.DoesNotContain(Locator.Parse("100.64.0.1"), seen);
    }

    [Fact]
    public void Slash29_pool_skips_network_dot1_and_broadcast_then_is_exhausted()
    {
        var s = TwoHosts("10.1.0.8/29");
        for (var i = 0; i < 5; i++) s = s.AllocateCapsule($"c{i}", "h1").Ok();
        var got = s.Capsules.Values.Select(c => c.Locator.ToString()).Order().ToArray();
        Assert.Equal(["10.1.0.10", "10.1.0.11", "10.1.0.12", "10.1.0.13", "10.1.0.14"], got);

        var e = s.Fails(s.AllocateCapsule("extra", "h1"));
        Assert.Contains("exhausted", e);
        Assert.Contains("10.1.0.8/29", e);
    }

    [Fact]
    public void Slash30_pool_holds_exactly_one_capsule()
    {
        var s = TwoHosts("10.1.0.4/30");
        s = s.AllocateCapsule("only", "h1").Ok();
        Assert.Equal(Locator.Parse("10.1.0.6"), s.Capsules["only"].Locator);
        Assert.Contains("exhausted", s.Fails(s.AllocateCapsule("second", "h2")));
        // Releasing makes room again.
        s = s.ReleaseCapsule("only").Ok();
        s = s.AllocateCapsule("second", "h2").Ok();
        Assert.Equal(Locator.Parse("10.1.0.6"), s.Capsules["second"].Locator);
    }

    [Fact]
    public void Lowest_free_locator_is_reused_after_release()
    {
        var s = TwoHosts();
        s = s.AllocateCapsule("a", "h1").Ok();   // .2
        s = s.AllocateCapsule("b", "h1").Ok();   // .3
        s = s.AllocateCapsule("c", "h2").Ok();   // .4
        s = s.ReleaseCapsule("b").Ok();
        s = s.AllocateCapsule("d", "h2").Ok();
        Assert.Equal(Locator.Parse("100.64.0.3"), s.Capsules["d"].Locator);
        s = s.ReleaseCapsule("c").Ok();
        s = s.ReleaseCapsule("a").Ok();
        s = s.AllocateCapsule("e", "h1").Ok();
        Assert.Equal(Locator.Parse("100.64.0.2"), s.Capsules["e"].Locator);
        s = s.AllocateCapsule("f", "h1").Ok();
        Assert.Equal(Locator.Parse("100.64.0.4"), s.Capsules["f"].Locator);
    }

    [Fact]
    public void Duplicate_capsule_name_is_refused()
    {
        var s = TwoHosts().AllocateCapsule("web", "h1").Ok();
        var e = s.Fails(s.AllocateCapsule("web", "h2"));
        Assert.Contains("already exists", e);
    }

    [Fact]
    public void Allocation_on_unknown_host_is_refused()
    {
        var s = TwoHosts();
        Assert.Contains("no host named 'h9'", s.Fails(s.AllocateCapsule("web", "h9")));
    }

    [Fact]
    public void Allocation_with_invalid_name_is_refused()
    {
        var s = TwoHosts();
        Assert.Contains("lower-case", s.Fails(s.AllocateCapsule("Web", "h1")));
        Assert.Contains("required", s.Fails(s.AllocateCapsule("", "h1")));
    }

    [Fact]
    public void Revision_grows_by_exactly_one_per_successful_change_and_not_on_failure()
    {
        var s = new DirectoryState(Dir.Pool);
        void Step(Func<DirectoryState, DirectoryState.Result> op, bool ok)
        {
            var before = s.Revision;
            var r = op(s);
            Assert.Equal(ok, r.Ok);
            if (ok)
            {
                Assert.Equal(before + 1, r.State.Revision);
                Assert.Equal(r.State.Revision, r.Change!.Revision);
            }
            else
            {
                Assert.Equal(before, r.State.Revision);
                Assert.Null(r.Change);
            }
            s = r.State;
        }

        Step(x => x.PutHost(Dir.H1), true);
        Step(x => x.PutHost(Dir.H2), true);
        Step(x => x.PutHost(Dir.H1 with { Name = "h9" }), false); // underlay conflict
        Step(x => x.AllocateCapsule("a", "h1"), true);
        Step(x => x.AllocateCapsule("a", "h1"), false);
        Step(x => x.AllocateCapsule("b", "nope"), false);
        Step(x => x.UpdateRead("a", "h2", CapsuleState.Running), true);
        Step(x => x.UpdateRead("zz", "h2", CapsuleState.Running), false);
        Step(x => x.UpdateRead("a", "nope", CapsuleState.Running), false);
        Step(x => x.DeleteHost("h2"), false); // holds 'a'
        Step(x => x.ReleaseCapsule("a"), true);
        Step(x => x.ReleaseCapsule("a"), false);
        Step(x => x.DeleteHost("h2"), true);
        Step(x => x.DeleteHost("h2"), false);
        Assert.Equal(6, s.Revision); // six successes above
    }

    [Fact]
    public void Capsule_record_revision_is_the_revision_of_its_last_change()
    {
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
        Assert.Equal(s.Revision, s.Capsules["a"].Revision);
        s = s.AllocateCapsule("b", "h1").Ok();
        Assert.Equal(s.Revision - 1, s.Capsules["a"].Revision);
        s = s.UpdateRead("a", "h1", CapsuleState.Running).Ok();
        Assert.Equal(s.Revision, s.Capsules["a"].Revision);
        var r = s.ReleaseCapsule("a");
        Assert.Equal(ChangeKind.CapsuleDeleted, r.Change!.Kind);
        Assert.Equal(r.State.Revision, r.Change.Capsule!.Revision);
        Assert.Equal("a", r.Change.Capsule.Name);
        Assert.False(r.State.Capsules.ContainsKey("a"));
    }

    [Fact]
    public void Reregistering_an_identical_host_spends_no_revision()
    {
        var s = TwoHosts();
        var rev = s.Revision;
        var r = s.PutHost(Dir.H1);
        Assert.True(r.Ok);
        Assert.Null(r.Change);
        Assert.Same(s, r.State);
        Assert.Equal(rev, r.State.Revision);

        // A record with something new (endpoint) does spend one.
        var r2 = s.PutHost(Dir.H1 with { AgentEndpoint = "10.0.0.1:9999" });
        Assert.True(r2.Ok);
        Assert.Equal(rev + 1, r2.State.Revision);
        Assert.Equal(ChangeKind.HostPut, r2.Change!.Kind);
        Assert.Equal("10.0.0.1:9999", r2.State.Hosts["h1"].AgentEndpoint);
    }

    [Fact]
    public void Host_can_change_its_own_underlay()
    {
        var s = TwoHosts();
        s = s.PutHost(Dir.H1 with { Underlay = Locator.Parse("10.0.0.11") }).Ok();
        Assert.Equal(Locator.Parse("10.0.0.11"), s.Hosts["h1"].Underlay);
        // ...and then another host may take the old one.
        s = s.PutHost(Dir.H3 with { Underlay = Locator.Parse("10.0.0.1") }).Ok();
        Assert.Equal(3, s.Hosts.Count);
    }

    [Fact]
    public void Underlay_address_conflict_is_refused()
    {
        var s = TwoHosts();
        var e = s.Fails(s.PutHost(new HostRecord("h3", Dir.H2.Underlay, "x:1")));
        Assert.Contains("10.0.0.2", e);
        Assert.Contains("'h2'", e);
        // Moving h1 onto h2's address is a conflict too.
        s.Fails(s.PutHost(Dir.H1 with { Underlay = Dir.H2.Underlay }));
    }

    [Fact]
    public void Invalid_host_name_is_refused()
    {
        var s = new DirectoryState(Dir.Pool);
        Assert.Contains("lower-case", s.Fails(s.PutHost(new HostRecord("H1", Locator.Parse("10.0.0.1"), "x"))));
    }

    [Fact]
    public void DeleteHost_is_refused_while_it_holds_a_capsule()
    {
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
        Assert.Contains("still holds capsule 'a'", s.Fails(s.DeleteHost("h1")));
        foreach (var st in new[] { CapsuleState.Running, CapsuleState.Stopped, CapsuleState.Migrating })
        {
            var t = s.UpdateRead("a", "h1", st).Ok();
            t.Fails(t.DeleteHost("h1"));
        }
        // Another host with no capsules may go.
        var r = s.DeleteHost("h2");
        Assert.True(r.Ok);
        Assert.Equal(ChangeKind.HostDeleted, r.Change!.Kind);
        Assert.Equal(Dir.H2, r.Change.Host);
        Assert.False(r.State.Hosts.ContainsKey("h2"));
    }

    [Fact]
    public void DeleteHost_is_allowed_once_its_capsules_are_moved_released_or_suspended()
    {
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok().AllocateCapsule("b", "h1").Ok();
        s = s.UpdateRead("a", "h2", CapsuleState.Running).Ok();
        s = s.UpdateRead("b", "h1", CapsuleState.Suspended).Ok();
        s = s.DeleteHost("h1").Ok();
        Assert.Equal(["h2"], s.Hosts.Keys);
        // The suspended capsule keeps its (now unregistered) host and its locator.
        Assert.Equal("h1", s.Capsules["b"].Host);
    }

    [Fact]
    public void DeleteHost_unknown_is_refused()
    {
        var s = TwoHosts();
        Assert.Contains("no host named 'h7'", s.Fails(s.DeleteHost("h7")));
    }

    [Fact]
    public void UpdateCapsule_keeps_the_locator()
    {
        var s = TwoHosts().AllocateCapsule("x", "h1").Ok().AllocateCapsule("a", "h1").Ok();
        var loc = s.Capsules["a"].Locator;
        s = s.UpdateRead("a", "h1", CapsuleState.Running).Ok();
        s = s.UpdateRead("a", "h2", CapsuleState.Migrating, "moving").Ok();
        Assert.Equal("moving", s.Capsules["a"].Detail);
        s = s.UpdateRead("a", "h2", CapsuleState.Running).Ok();
        s = s.UpdateRead("a", "h2", CapsuleState.Suspended).Ok();
        s = s.UpdateRead("a", "h1", CapsuleState.Running).Ok();
        var rec = s.Capsules["a"];
        Assert.Equal(loc, rec.Locator);
        Assert.Equal("h1", rec.Host);
        Assert.Equal(CapsuleState.Running, rec.State);
        Assert.Null(rec.Detail);
    }

    [Fact]
    public void UpdateCapsule_to_unknown_host_is_refused_unless_suspended()
    {
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
        Assert.Contains("no host named 'h9'", s.Fails(s.UpdateRead("a", "h9", CapsuleState.Running)));
        Assert.True(s.UpdateRead("a", "h9", CapsuleState.Suspended).Ok);
    }

    [Fact]
    public void UpdateCapsule_expectRevision_mismatch_is_refused()
    {
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
        var rev = s.Capsules["a"].Revision;
        s = s.AllocateCapsule("b", "h2").Ok(); // moves the directory revision, not a's

        var e = s.Fails(s.UpdateCapsule("a", "h2", CapsuleState.Running, expectRevision: rev + 1));
        Assert.Contains("changed meanwhile", e);
        Assert.Contains($"expected {rev + 1}", e);
        Assert.True(s.UpdateCapsule("a", "h2", CapsuleState.Running, expectRevision: rev + 1).Conflict);

        s = s.UpdateCapsule("a", "h2", CapsuleState.Running, expectRevision: rev).Ok();
        // The old revision is now stale, and the refusal says who holds the capsule now.
        var stale = s.UpdateCapsule("a", "h1", CapsuleState.Running, expectRevision: rev);
        Assert.True(stale.Conflict);
        Assert.Contains("changed meanwhile: it is now running on h2", s.Fails(stale));
    }

    [Fact]
    public void An_update_without_a_revision_is_refused()
    {
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
        foreach (var rev in new long[] { 0, -1 })
        {
            var r = s.UpdateCapsule("a", "h2", CapsuleState.Running, rev);
            Assert.Contains("must name the revision", s.Fails(r));
            Assert.False(r.Conflict);
        }
    }

    [Fact]
    public void A_stale_revision_is_refused_also_when_the_record_looks_the_same()
    {
        // Fencing is by revision, not by content: a writer that read before another's change loses
        // even if that change left host and state as they were.
        var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
        var read = s.Capsules["a"].Revision;
        s = s.UpdateCapsule("a", "h1", CapsuleState.Creating, read).Ok();
        Assert.Contains("it is now creating on h1", s.Fails(s.UpdateCapsule("a", "h1", CapsuleState.Running, read)));
    }

    // ---- fencing property: two writers, each reads then updates, in any interleaving ----

    [Fact]
    public void Property_two_writers_that_read_then_update_never_both_win_a_revision()
    {
        // A schedule is who acts next (writer 0 or 1); each writer alternates read, then update at
        // the revision it read. The model: an update wins iff nothing was written since its read.
        var hosts = new[] { "h1", "h2" };
        var gen = Gen.Select(Gen.Int[0, 1].Array[2, 60], Gen.Int[0, 4].Array[60, 60]);
        gen.Sample((schedule, states) =>
        {
            var s = TwoHosts().AllocateCapsule("a", "h1").Ok();
            var read = new long?[2];
            var winners = new Dictionary<long, int>();
            var lastWinner = -1;
            for (var i = 0; i < schedule.Length; i++)
            {
                var w = schedule[i];
                if (read[w] is not { } rev)
                {
                    read[w] = s.Capsules["a"].Revision;
                    continue;
                }
                read[w] = null;
                var expectWin = s.Capsules["a"].Revision == rev;
                var r = s.UpdateCapsule("a", hosts[w], (CapsuleState)states[i], rev);
                Assert.True(expectWin == r.Ok, $"step {i}: writer {w} at revision {rev}: {r.Error}");
                Assert.Equal(!expectWin, r.Conflict);
                if (!r.Ok)
                {
                    Assert.Contains($"on {s.Capsules["a"].Host}", r.Error);
                    continue;
                }
                Assert.True(winners.TryAdd(rev, w), $"revision {rev} was won twice");
                lastWinner = w;
                s = r.State;
            }
            // The record shows the last winner, and only it.
            Assert.Equal(lastWinner < 0 ? "h1" : hosts[lastWinner], s.Capsules["a"].Host);
            Assert.Equal(winners.Count, (int)(s.Revision - TwoHosts().Revision - 1));
        }, iter: 500);
    }

    [Fact]
    public void Failed_operations_leave_older_snapshots_unchanged()
    {
        var s0 = TwoHosts();
        var s1 = s0.AllocateCapsule("a", "h1").Ok();
        Assert.Empty(s0.Capsules);
        Assert.Single(s1.Capsules);
        var s2 = s1.ReleaseCapsule("a").Ok();
        Assert.Single(s1.Capsules);
        Assert.Empty(s2.Capsules);
    }

    // ---- model-based property ----

    enum OpKind { Allocate, Release, Update, PutHost, DeleteHost }
    sealed record Op(OpKind Kind, int Name, int Host, CapsuleState State)
    {
        public override string ToString() => $"{Kind}(c{Name}, h{Host}, {State})";
    }

    static readonly string[] HostNames = ["h1", "h2", "h3"];
    static HostRecord HostN(int i) => new(HostNames[i], new Locator(0x0A000001u + (uint)i), $"10.0.0.{i + 1}:7471");

    static readonly Gen<Op> GenOp =
        Gen.Select(Gen.Int[0, 4], Gen.Int[0, 7], Gen.Int[0, 2], Gen.Int[0, 4],
            (k, n, h, st) => new Op((OpKind)k, n, h, (CapsuleState)st));

    [Fact]
    public void Property_random_ops_agree_with_a_model_and_never_share_a_locator()
    {
        // /29 pool: five usable locators (.2 .. .6) for eight names, so exhaustion is exercised too.
        var pool = Prefix.Parse("10.9.0.0/29");
        const int capacity = 5;

        GenOp.Array[0, 80].Sample(ops =>
        {
            var s = new DirectoryState(pool).PutHost(HostN(0)).Ok().PutHost(HostN(1)).Ok();
            var hosts = new HashSet<string> { "h1", "h2" };
            var model = new Dictionary<string, (uint Offset, string Host, CapsuleState State)>();

            foreach (var op in ops)
            {
                var name = $"c{op.Name}";
                var host = HostNames[op.Host];
                var before = s;
                DirectoryState.Result r;
                bool expectOk;
                bool expectChange = true;
                switch (op.Kind)
                {
                    case OpKind.Allocate:
                        expectOk = !model.ContainsKey(name) && hosts.Contains(host) && model.Count < capacity;
                        r = s.AllocateCapsule(name, host);
                        if (expectOk)
                        {
                            uint off = 2;
                            while (model.Values.Any(v => v.Offset == off)) off++;
                            model[name] = (off, host, CapsuleState.Creating);
                        }
                        break;
                    case OpKind.Release:
                        expectOk = model.Remove(name);
                        r = s.ReleaseCapsule(name);
                        break;
                    case OpKind.Update:
                        expectOk = model.TryGetValue(name, out var cur)
                            && (op.State == CapsuleState.Suspended || hosts.Contains(host));
                        r = s.UpdateRead(name, host, op.State);
                        if (expectOk) model[name] = (cur.Offset, host, op.State);
                        break;
                    case OpKind.PutHost:
                        expectOk = true;
                        expectChange = !hosts.Contains(host);
                        r = s.PutHost(HostN(op.Host));
                        hosts.Add(host);
                        break;
                    default:
                        expectOk = hosts.Contains(host)
                            && !model.Values.Any(v => v.Host == host && v.State != CapsuleState.Suspended);
                        r = s.DeleteHost(host);
                        if (expectOk) hosts.Remove(host);
                        break;
                }

                Assert.True(expectOk == r.Ok, $"{op}: model expected ok={expectOk}, got error={r.Error}");
                var spent = r.Ok && expectChange ? 1 : 0;
                Assert.Equal(before.Revision + spent, r.State.Revision);
                Assert.Equal(spent == 1, r.Change is not null);
                s = r.State;

                // Invariants.
                Assert.Equal(hosts.Order(), s.Hosts.Keys);
                Assert.Equal(model.Keys.Order(), s.Capsules.Keys);
                var locators = s.Capsules.Values.Select(c => c.Locator).ToList();
                Assert.Equal(locators.Count, locators.Distinct().Count());
                foreach (var c in s.Capsules.Values)
                {
                    Assert.True(pool.Contains(c.Locator), $"{c.Locator} outside {pool}");
                    var off = c.Locator.Value - pool.Network.Value;
                    Assert.InRange(off, 2u, (uint)pool.Size - 2);
                    var m = model[c.Name];
                    Assert.Equal(m.Offset, off);
                    Assert.Equal(m.Host, c.Host);
                    Assert.Equal(m.State, c.State);
                    Assert.InRange(c.Revision, 1, s.Revision);
                }
            }
        }, iter: 400);
    }

    [Fact]
    public void Property_distinct_locators_in_a_large_pool()
    {
        // Same invariant with a /16 and longer runs, without the model: allocation never collides.
        var ops = Gen.Select(Gen.Int[0, 2], Gen.Int[0, 40]).Array[1, 300];
        ops.Sample(seq =>
        {
            var s = TwoHosts();
            foreach (var (k, n) in seq)
            {
                var name = $"c{n}";
                s = k switch
                {
                    0 => s.AllocateCapsule(name, n % 2 == 0 ? "h1" : "h2").State,
                    1 => s.ReleaseCapsule(name).State,
                    _ => s.UpdateRead(name, n % 3 == 0 ? "h1" : "h2", CapsuleState.Running).State,
                };
                var locs = s.Capsules.Values.Select(c => c.Locator.Value).ToHashSet();
                Assert.Equal(s.Capsules.Count, locs.Count);
                Assert.All(locs, l => Assert.True(s.Pool.Contains(new Locator(l)) && l - s.Pool.Network.Value >= 2));
            }
        }, iter: 200);
    }
}
