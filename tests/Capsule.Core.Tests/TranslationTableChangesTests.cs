using CsCheck;

namespace Capsule.Core.Tests;

/// <summary>A table kept by applying changes answers exactly as one built from the final state.</summary>
public class TranslationTableChangesTests
{
    /// <summary>
    /// One step: create, start, move, stop or remove capsule n (0..29), or a host change now and then.
    /// </summary>
    static readonly Gen<(int Op, int N, int Host)> Step = Gen.Select(Gen.Int[0, 9], Gen.Int[0, 29], Gen.Int[1, 3]);

    [Fact]
    public void Applying_changes_one_by_one_matches_a_full_build_at_every_step()
    {
        Step.Array[1, 400].Sample(steps =>
        {
            var s = Dir.WithHosts(Dir.Pool, Dir.H1, Dir.H2);
            var table = TranslationTable.From(s, "h1");
            foreach (var (op, n, host) in steps)
            {
                var name = $"c{n}";
                var h = $"h{host}";
                var exists = s.Capsules.ContainsKey(name);
                var r = op switch
                {
                    0 => s.PutHost(host == 3 ? Dir.H3 : Dir.H2 with { Serves = "" }),
                    1 or 2 when !exists => s.AllocateCapsule(name, s.Hosts.ContainsKey(h) ? h : "h1"),
                    _ when !exists => s.AllocateCapsule(name, "h2"),
                    3 or 4 or 5 => s.UpdateRead(name, s.Hosts.ContainsKey(h) ? h : "h1", CapsuleState.Running),
                    6 => s.UpdateRead(name, s.Capsules[name].Host, CapsuleState.Migrating),
                    7 => s.UpdateRead(name, "", CapsuleState.Suspended),
                    _ => s.ReleaseCapsule(name),
                };
                if (!r.Ok || r.Change is null) continue;
                s = r.State;
                table = table.With(s, [r.Change], "h1");
                var full = TranslationTable.From(s, "h1");
                for (uint off = 0; off < 40; off++)
                {
                    var l = Dir.Pool.At(off);
                    Assert.Equal(full.IsLocal(l), table.IsLocal(l));
                    Assert.Equal(full.TryRoute(l, out var a), table.TryRoute(l, out var b));
                    Assert.Equal(a, b);
                }
                Assert.Equal(full.Epoch, table.Epoch);
            }
        }, iter: 200);
    }

    [Fact]
    public void A_change_shares_the_frozen_maps_and_the_overlay_is_folded_in_once_it_grows()
    {
        var s = Dir.WithHosts(Dir.Pool, Dir.H1, Dir.H2);
        for (var i = 0; i < 1000; i++) s = s.AllocateCapsule($"c{i}", "h2").Ok();
        for (var i = 0; i < 1000; i++) s = s.UpdateRead($"c{i}", "h2", CapsuleState.Running).Ok();
        var table = TranslationTable.From(s, "h1");
        Assert.Equal(1000, table.Count);
        Assert.Equal(0, table.Pending);
        var r = s.UpdateRead("c7", "h1", CapsuleState.Running);
        var next = table.With(r.State, [r.Change!], "h1");
        Assert.Equal(1, next.Pending);
        Assert.True(next.IsLocal(r.State.Capsules["c7"].Locator));
        s = r.State;
        for (var i = 0; i < 200; i++)
        {
            r = s.UpdateRead($"c{i}", i % 2 == 0 ? "h1" : "h2", CapsuleState.Running);
            s = r.State;
            next = next.With(s, [r.Change!], "h1");
        }
        Assert.True(next.Pending <= 125, $"{next.Pending} changes pending: the overlay was never folded in");
    }
}
