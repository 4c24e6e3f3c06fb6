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
        _h1 = new PeerKeys(Wire.Mode.Encrypted) { OnNeed = (h, b) => _asks1.Add((h, b)) };
        _h2 = new PeerKeys(Wire.Mode.Encrypted) { OnNeed = (h, b) => _asks2.Add((h, b)) };
    }

    void Exchange(uint id)
    {
        var key = Aead.NewKey();
        _h2.InstallReceive(H1, id, key); // the peer acknowledged ...
        _h1.InstallSend(H2, id, key);    // ... then the sender switches
    }

    byte[] Sealed()
    {
        var d = new byte[Wire.HeaderSize + Inner.Length + Wire.TagSize];
        Inner.CopyTo(d, Wire.HeaderSize);
        Assert.Equal(DropReason.None, _h1.Seal(H2, d, Inner.Length, 9, out var n));
        Assert.Equal(d.Length, n);
        return d;
    }

    DropReason Open(byte[] d)
    {
        var copy = d.ToArray();
        Assert.Equal(DropReason.None, Wire.TryReadHeader(copy, out Wire.Header h));
        var r = _h2.Open(H1, h, copy);
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
    public void The_cut_counts_per_key_from_the_keys_start_whichever_end_restarted()
    {
        Assert.Equal(default, _h1.SealedTowards(H2)); // no key yet: nothing sent, nothing to wait for
        Exchange(7);
        var first = Enumerable.Range(0, 5).Select(_ => Sealed()).ToList();
        foreach (var d in first) Assert.Equal(DropReason.None, Open(d));
        // The receiver restarts: it opens under a new key, and the sender counts that key's datagrams from 0.
        Exchange(8);
        var cut0 = _h1.SealedTowards(H2);
        Assert.Equal(new HoldCut(8, 0), cut0);
        Assert.Equal(0ul, cut0.Missing(_h2.OpenedFrom(H1, 8)));
        var later = Enumerable.Range(0, 3).Select(_ => Sealed()).ToList();
        var cut = _h1.SealedTowards(H2);
        Assert.Equal(new HoldCut(8, 3), cut);
        Assert.Equal(3ul, cut.Missing(_h2.OpenedFrom(H1, 8)));
        Assert.Equal(DropReason.None, Open(later[1]));
        Assert.Equal(1ul, cut.Missing(_h2.OpenedFrom(H1, 8))); // up to the second: the third still to come
        Assert.Equal(DropReason.None, Open(later[2]));
        Assert.Equal(0ul, cut.Missing(_h2.OpenedFrom(H1, 8))); // the first is late or lost: the wait ends
        Assert.Equal(5ul, _h2.OpenedFrom(H1, 7)); // the previous key's, still known for its grace
        Assert.Null(_h2.OpenedFrom(H1, 99));
        Assert.Equal(0ul, cut.Missing(null)); // a key the receiver does not open: nothing can arrive under it
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
