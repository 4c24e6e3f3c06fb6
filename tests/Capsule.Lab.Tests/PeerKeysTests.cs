using Capsule.Agent.DataPlane;
using Capsule.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The data plane's key state without a kernel: what one host seals, its peer opens once; unknown keys,
/// replays and forgeries are refused by reason; asks for keys are rate-limited.
/// </summary>
public sealed class PeerKeysTests
{
    static readonly Locator H1 = Locator.Parse("10.0.0.1"), H2 = Locator.Parse("10.0.0.2");
    static readonly byte[] Inner = Enumerable.Range(0, 60).Select(i => (byte)i).ToArray();

    readonly List<(Locator Host, bool Back)> _asks1 = [], _asks2 = [];
    readonly PeerKeys _h1, _h2;

    public PeerKeysTests()
    {
        _h1 = new PeerKeys(Wire.Mode.Encrypted, lanes: 2) { OnNeed = (h, b) => _asks1.Add((h, b)) };
        _h2 = new PeerKeys(Wire.Mode.Encrypted, lanes: 2) { OnNeed = (h, b) => _asks2.Add((h, b)) };
    }

    void Exchange(uint id)
    {
        var key = Aead.NewKey();
        _h2.InstallReceive(H1, id, key); // the peer acknowledged ...
        _h1.InstallSend(H2, id, key);    // ... then the sender switches
    }

    byte[] Sealed(int lane = 0)
    {
        var d = new byte[Wire.HeaderSize + Inner.Length + Wire.TagSize];
        Inner.CopyTo(d, Wire.HeaderSize);
        Assert.Equal(DropReason.None, _h1.Seal(H2, d, Inner.Length, 9, out var n, lane));
        Assert.Equal(d.Length, n);
        return d;
    }

    DropReason Open(byte[] d, int lane = 0)
    {
        var copy = d.ToArray();
        Assert.Equal(DropReason.None, Wire.TryReadHeader(copy, out Wire.Header h));
        var r = _h2.Open(H1, h, copy, lane);
        if (r == DropReason.None) Assert.Equal(Inner, copy.AsSpan(Wire.HeaderSize, Inner.Length).ToArray());
        return r;
    }

    [Fact]
    public void No_key_drops_and_asks_once_a_second()
    {
        var d = new byte[Wire.HeaderSize + Inner.Length + Wire.TagSize];
        for (var i = 0; i < 100; i++) Assert.Equal(DropReason.NoSendKey, _h1.Seal(H2, d, Inner.Length, 1, out _));
        Assert.Equal([(H2, false)], _asks1);
    }

    [Fact]
    public void Each_datagram_opens_once_in_order_or_not()
    {
        Exchange(7);
        var all = Enumerable.Range(0, 50).Select(_ => Sealed()).ToList();
        foreach (var d in all.AsEnumerable().Reverse()) Assert.Equal(DropReason.None, Open(d));
        foreach (var d in all) Assert.Equal(DropReason.Replay, Open(d));
        Assert.Empty(_asks2);
    }

    [Fact]
    public void Lanes_seal_under_one_key_with_counters_of_their_own_and_each_opens_once_on_any_lane()
    {
        Exchange(7);
        var all = Enumerable.Range(0, 40).Select(i => Sealed(lane: i % 2)).ToList();
        var nonces = all.Select(d => Convert.ToHexString(d, 8, 12)).ToHashSet();
        Assert.Equal(all.Count, nonces.Count); // key id and counter are the GCM nonce: never twice
        Assert.Equal([0, 1], all.Select(d => d[12]).Distinct().Order().Select(b => (int)b)); // the lane in the top byte
        // Received on either lane, in any order: once each, then replays.
        foreach (var (d, i) in all.AsEnumerable().Reverse().Select((d, i) => (d, i)))
            Assert.Equal(DropReason.None, Open(d, lane: i % 2));
        foreach (var d in all) Assert.Equal(DropReason.Replay, Open(d, lane: 1));
        Assert.Empty(_asks2);
    }

    [Fact]
    public void The_cut_counts_per_key_and_lane_from_the_keys_start_whichever_end_restarted()
    {
        Assert.Equal(default, _h1.SealedTowards(H2)); // no key yet: nothing sent, nothing to wait for
        Exchange(7);
        var first = Enumerable.Range(0, 5).Select(_ => Sealed()).ToList();
        foreach (var d in first) Assert.Equal(DropReason.None, Open(d));
        // The receiver restarts: it opens under a new key, and the sender counts that key's datagrams from 0.
        Exchange(8);
        var cut0 = _h1.SealedTowards(H2);
        Assert.Equal(8u, cut0.KeyId);
        Assert.Equal([0ul, 0ul], cut0.Sent);
        Assert.Equal(0ul, _h2.NotYetOpened(H1, cut0));
        var lane0 = Enumerable.Range(0, 3).Select(_ => Sealed(lane: 0)).ToList();
        var lane1 = Enumerable.Range(0, 2).Select(_ => Sealed(lane: 1)).ToList();
        var cut = _h1.SealedTowards(H2);
        Assert.Equal(8u, cut.KeyId);
        Assert.Equal([3ul, 2ul], cut.Sent);
        Assert.Equal(5ul, _h2.NotYetOpened(H1, cut));
        Assert.Equal(DropReason.None, Open(lane1[1], lane: 1));
        Assert.Equal(3ul, _h2.NotYetOpened(H1, cut)); // lane 1 is through (its first was lost: a lane keeps order)
        Assert.Equal(DropReason.None, Open(lane0[1]));
        Assert.Equal(1ul, _h2.NotYetOpened(H1, cut)); // up to lane 0's second: its third still to come
        Assert.Equal(DropReason.None, Open(lane0[2]));
        Assert.Equal(0ul, _h2.NotYetOpened(H1, cut));
        // The previous key's, still known for its grace: all five arrived, a sixth would be missing.
        Assert.Equal(0ul, _h2.NotYetOpened(H1, new HoldCut(7, [5])));
        Assert.Equal(1ul, _h2.NotYetOpened(H1, new HoldCut(7, [6])));
        // A key the receiver does not open: nothing can arrive under it.
        Assert.Equal(0ul, _h2.NotYetOpened(H1, new HoldCut(99, [5, 5])));
    }

    [Fact]
    public void A_forgery_is_a_bad_tag_and_does_not_move_the_window()
    {
        Exchange(7);
        var d = Sealed();
        var forged = d.ToArray();
        forged[12] = 0x7F; // counter far ahead, same key id
        Assert.Equal(DropReason.BadTag, Open(forged));
        Assert.Equal(DropReason.None, Open(d)); // still inside the window: the forgery moved nothing
    }

    [Fact]
    public void An_unknown_key_id_asks_the_sender_for_its_key_rate_limited()
    {
        Exchange(7);
        var d = Sealed();
        d[11] ^= 1; // key id 6
        for (var i = 0; i < 10; i++) Assert.Equal(DropReason.UnknownKey, Open(d));
        Assert.Equal([(H1, true)], _asks2);
    }

    [Fact]
    public void A_peer_that_lost_our_key_gets_nothing_sealed_with_it_until_a_new_one_is_acknowledged()
    {
        Exchange(7);
        Assert.True(_h1.CanSealTowards(H2));
        // H2 restarted: it pushed its own key and asked for one of ours, so ours is dead to it.
        _h1.DropSend(H2);
        Assert.False(_h1.CanSealTowards(H2));
        Assert.False(_h1.CanSealTowards(H2));
        var d = new byte[Wire.HeaderSize + Inner.Length + Wire.TagSize];
        Assert.Equal(DropReason.NoSendKey, _h1.Seal(H2, d, Inner.Length, 9, out _));
        Assert.Equal([(H2, false)], _asks1); // asked for once, rate-limited like a failed seal
        var restarted = new PeerKeys(Wire.Mode.Encrypted, lanes: 2);
        var key = Aead.NewKey();
        restarted.InstallReceive(H1, 8, key);
        _h1.InstallSend(H2, 8, key);
        Assert.True(_h1.CanSealTowards(H2));
        var fresh = Sealed();
        Assert.Equal(DropReason.None, Wire.TryReadHeader(fresh, out Wire.Header h));
        Assert.Equal(DropReason.None, restarted.Open(H1, h, fresh));
    }

    [Fact]
    public void The_previous_key_opens_what_was_in_flight_during_a_rotation()
    {
        Exchange(7);
        var inFlight = Sealed();
        Exchange(8);
        var after = Sealed();
        Assert.Equal(DropReason.None, Open(after));
        Assert.Equal(DropReason.None, Open(inFlight));
        Exchange(9); // key 7 is now two behind: gone
        Assert.Equal(DropReason.UnknownKey, Open(inFlight));
    }

    [Fact]
    public void The_same_key_pushed_again_keeps_its_window()
    {
        var key = Aead.NewKey();
        _h2.InstallReceive(H1, 7, key);
        _h1.InstallSend(H2, 7, key);
        var d = Sealed();
        Assert.Equal(DropReason.None, Open(d));
        _h2.InstallReceive(H1, 7, key); // its reply was lost and the sender tried again
        Assert.Equal(DropReason.Replay, Open(d));
    }

    [Fact]
    public void Authenticate_only_leaves_the_packet_readable_and_still_refuses_a_change()
    {
        var plain = new PeerKeys(Wire.Mode.AuthenticateOnly);
        var key = Aead.NewKey();
        _h2.InstallReceive(H1, 3, key);
        plain.InstallSend(H2, 3, key);
        var d = new byte[Wire.HeaderSize + Inner.Length + Wire.TagSize];
        Inner.CopyTo(d, Wire.HeaderSize);
        Assert.Equal(DropReason.None, plain.Seal(H2, d, Inner.Length, 1, out _));
        Assert.Equal(Inner, d.AsSpan(Wire.HeaderSize, Inner.Length).ToArray());
        var changed = d.ToArray();
        changed[Wire.HeaderSize + 5] ^= 0x10;
        Assert.Equal(DropReason.BadTag, Open(changed));
        Assert.Equal(DropReason.None, Open(d));
    }
}
