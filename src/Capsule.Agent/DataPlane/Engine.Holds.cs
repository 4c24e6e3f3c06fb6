using System.Diagnostics;
using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// Holds, their leases and their drains (seed Fig. 5B/6), all on the owner's egress thread (lane 0). A hold starts
/// at a batch boundary of every lane, so "sent before the cut" is exactly what the counters say. Every hold has
/// a lease: if the host that asked for it never releases it (its agent died, the RPC was lost),
/// the hold ends by itself, towards wherever the table routes the locator then, or dropped when
/// it routes it nowhere; either way the peers it paused get their window back.
///
/// A release does not send everything at once: the hold drains in bursts of
/// <see cref="Hold.BurstSize"/> packets, about a millisecond apart, between ordinary batches. A
/// capsule just restored has socket buffers of ordinary size, and hundreds of datagrams at line
/// rate would overflow them (seen: a UDP receiver losing 80% of a 460-packet flush); pacing with
/// a sleep on this thread stalled every other capsule of the host, pacing with the poll timeout
/// does not. Packets for the locator read while it drains join the back of the buffer, so none
/// overtakes a held one, and the window reopens only once the last held packet is on its way.
/// </summary>
internal sealed unsafe partial class Engine
{
    /// <summary>About 1 ms between bursts (8 to 64 packets each: 8k to 64k packets/s).</summary>
    static readonly long BurstGap = Stopwatch.Frequency / 1000;

    /// <summary>
    /// How long a drain towards another host waits for a key to seal with (its agent restarted and has none of
    /// ours yet) before it sends anyway, and what cannot be sealed is dropped and counted.
    /// </summary>
    static readonly long KeyPatience = Stopwatch.Frequency * 5;

    /// <summary>Longest lease accepted (keeps deadline arithmetic far from overflow).</summary>
    public static readonly TimeSpan MaxLease = TimeSpan.FromDays(1);

    readonly Dictionary<uint, Hold> _holds = []; // the owner's thread only
    readonly List<Hold> _due = [];               // the owner's thread only; reused so a tick allocates nothing

    // What every lane's egress thread reads: a copy of _holds, published whole at each change, and its version.
    Dictionary<uint, Hold> _held = [];
    long _holdsVersion;

    /// <summary>Cuts to answer once every lane has taken the holds of their version (owner's thread only).</summary>
    readonly List<(long Version, Action Answer)> _cuts = [];

    /// <summary>Owner: the holds changed; every lane takes the new copy between two of its batches.</summary>
    void PublishHolds()
    {
        Volatile.Write(ref _held, new Dictionary<uint, Hold>(_holds));
        Interlocked.Increment(ref _holdsVersion);
        for (var i = 1; i < _lanes.Length; i++) _lanes[i].Wake();
    }

    /// <summary>
    /// Another lane, between batches (everything it read before is sent): it works with the newest holds from now
    /// on, and tells the owner, whose cuts may wait for it.
    /// </summary>
    void TakeHolds(Lane l)
    {
        var version = Volatile.Read(ref _holdsVersion);
        if (l.SeenHolds == version) return;
        Volatile.Write(ref l.SeenHolds, version);
        Owner.Wake();
    }

    /// <summary>
    /// Owner: answers <paramref name="answer"/> once every lane works with the holds as they are now: no lane can
    /// then still send a packet it read for a held capsule before the hold, and the cut it answers is exact.
    /// </summary>
    void OnceLanesSeeHolds(Action answer)
    {
        _cuts.Add((Volatile.Read(ref _holdsVersion), answer));
        AnswerCuts();
    }

    void AnswerCuts()
    {
        for (var i = _cuts.Count - 1; i >= 0; i--)
        {
            var (version, answer) = _cuts[i];
            var seen = true;
            for (var k = 1; k < _lanes.Length && seen; k++) seen = Volatile.Read(ref _lanes[k].SeenHolds) >= version;
            if (!seen) continue;
            _cuts.RemoveAt(i);
            answer();
        }
    }

    static long Now => Stopwatch.GetTimestamp();

    static long After(TimeSpan span) => Now + (long)(span.TotalSeconds * Stopwatch.Frequency);

    /// <summary>
    /// Starts holding packets for <paramref name="locator"/> for at most <paramref name="lease"/>;
    /// returns how far this host's sequence towards <paramref name="via"/> stood at the hold (<see cref="HoldCut"/>),
    /// the cut that the capsule's host waits to have received. For a locator already held it renews the lease and
    /// returns the cut as it is now.
    /// For one whose hold still drains, the new hold begins the moment the drain ends (nothing read
    /// in between escapes it), and its cut then includes everything the drain sent: waiting is
    /// short (a full hold drains in ~0.15 s) and keeps one buffer, in one order, per locator.
    /// Capacity and lease are cut to this host's maxima (Engine.Limits.cs); a new hold past
    /// <see cref="MaxHolds"/> fails with <see cref="HoldRefusedException"/>.
    /// </summary>
    public Task<HoldCut> HoldAsync(Locator locator, Locator via, int capacity, bool dropUdp,
        bool pause, TimeSpan lease)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(lease, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(lease, MaxLease);
        (capacity, lease) = Clamp(capacity, lease);
        var request = new HoldRequest(locator, via, capacity, dropUdp, pause, lease);
        return OnEgress<HoldCut>(done => BeginOrRenew(request, done));
    }

    readonly record struct HoldRequest(
        Locator Locator, Locator Via, int Capacity, bool DropUdp, bool Pause, TimeSpan Lease);

    void BeginOrRenew(HoldRequest r, TaskCompletionSource<HoldCut> done)
    {
        if (_holds.TryGetValue(r.Locator.Value, out var hold))
        {
            if (hold.Draining)
            {
                hold.AfterDrain.Add((() => BeginOrRenew(r, done), e => done.TrySetException(e)));
                return;
            }
            hold.Renew(After(r.Lease));
            if (r.Pause && !hold.Pauses)
            {
                hold.Pauses = true;
                PauseFlows(r.Locator);
            }
        }
        else
        {
            if (NoRoomForHold() is { } full)
            {
                HoldsRefused++;
                done.SetException(new HoldRefusedException(full));
                return;
            }
            var buffer = NewBuffer(r.Locator, r.Capacity, r.DropUdp);
            var fresh = new Hold(r.Locator, buffer, After(r.Lease), r.Pause);
            _holds[r.Locator.Value] = fresh;
            if (r.Pause) PauseFlows(r.Locator);
            PublishHolds();
            Tell(HoldChangeKind.Taken, fresh, r.Via, 0, 0);
        }
        OnceLanesSeeHolds(() => done.TrySetResult(_keys.SealedTowards(r.Via)));
    }

    /// <summary>
    /// Completes when this host no longer holds packets for <paramref name="locator"/> (its hold
    /// released and drained, expired, or never there), with what that hold flushed and dropped.
    /// </summary>
    public Task<(long Flushed, long Dropped)> WhenNotHoldingAsync(Locator locator) =>
        OnEgress<(long, long)>(done =>
        {
            if (_holds.TryGetValue(locator.Value, out var hold)) hold.Waiters.Add(done);
            else done.SetResult((0L, 0L));
        });

    /// <summary>Whether this host holds (or still drains) packets for <paramref name="locator"/>.</summary>
    public Task<bool> IsHoldingAsync(Locator locator) =>
        OnEgress<bool>(done => done.SetResult(_holds.ContainsKey(locator.Value)));

    /// <summary>
    /// Ends a hold: drains every held packet, in order, to <paramref name="toHost"/> (or, when that
    /// is this host, back into the TUN for a local capsule; when it is none, nowhere: they are
    /// dropped). Completes when the drain has ended, with (flushed, dropped); at once with (0, 0)
    /// when nothing holds the locator. A release of a hold that already drains redirects the rest.
    /// </summary>
    public Task<(long Flushed, long Dropped)> ReleaseAsync(Locator locator, Locator toHost) =>
        OnEgress<(long, long)>(done =>
        {
            if (!_holds.TryGetValue(locator.Value, out var hold))
            {
                done.SetResult((0L, 0L));
                return;
            }
            hold.Waiters.Add(done);
            if (toHost.IsNone)
            {
                // Nowhere to go (the capsule was removed while it slept): the held packets are dropped,
                // and counted, and nobody speaks for it any more.
                lock (hold.Gate)
                {
                    var dropped = hold.Buffer.Clear();
                    Owner.Egress.HoldDropped += dropped;
                    ForgetFlows(locator);
                    End(hold, dropped, resume: false);
                }
                return;
            }
            // The first burst goes in this very loop turn (its tick follows the commands).
            lock (hold.Gate) hold.DrainTowards(toHost, toHost == Table.Self, Now);
        });

    /// <summary>
    /// Poll timeout for the owner's egress thread: until the nearest lease deadline or burst, so an expiry
    /// is noticed with no packet arriving, and without spinning. -1 (forever) with no hold.
    /// </summary>
    int HoldTimeoutMs()
    {
        if (_holds.Count == 0) return -1;
        var due = long.MaxValue;
        foreach (var hold in _holds.Values) due = Math.Min(due, hold.Due);
        var wait = due - Now;
        if (wait <= 0) return 0;
        var ms = (wait * 1000 + Stopwatch.Frequency - 1) / Stopwatch.Frequency; // rounded up: never early
        return (int)Math.Min(ms, int.MaxValue);
    }

    /// <summary>Once per egress loop turn while anything is held: bursts that are due, leases that ran out.</summary>
    void TickHolds()
    {
        var now = Now;
        foreach (var hold in _holds.Values)
            if (hold.Due <= now) _due.Add(hold);
        // Handled after the walk: ending a hold removes it, and may begin a queued one.
        foreach (var hold in _due)
        {
            if (hold.Draining) DrainBurst(hold, now);
            else Expire(hold, now);
        }
        _due.Clear();
    }

    /// <summary>The lease ran out with no release: end the hold as a release to the table's route would.</summary>
    void Expire(Hold hold, long now)
    {
        hold.Expired = true;
        Owner.Egress.HoldsExpired++;
        var table = Table;
        var loc = hold.Locator;
        lock (hold.Gate)
        {
            if (table.IsLocal(loc))
            {
                hold.DrainTowards(table.Self, self: true, now);
                DrainBurst(hold, now);
                return;
            }
            if (table.TryRoute(loc, out var host))
            {
                hold.DrainTowards(host, host == table.Self, now);
                DrainBurst(hold, now);
                return;
            }
            // Routed nowhere: what was held can go nowhere either. The peers still get their window
            // back, so they do not sit at zero window for a capsule that may yet answer.
            var dropped = hold.Buffer.Clear();
            Owner.Egress.HoldExpiredDropped += dropped;
            End(hold, dropped, resume: true);
        }
    }

    /// <summary>
    /// Sends the next burst (<see cref="Hold.BurstSize"/> packets at most) from the front of a draining hold.
    /// </summary>
    void DrainBurst(Hold hold, long now)
    {
        // Sealed with no key the receiver has, the held packets would be lost there, and the TCP data among them
        // was acknowledged in the capsule's name: its senders never send it again. So the drain waits for a key.
        if (!hold.DrainsToSelf && now - hold.DrainBegan < KeyPatience && !_keys.CanSealTowards(hold.DrainTo))
        {
            hold.NextBurst = now + BurstGap;
            return;
        }
        // Under the hold's lock: another lane may be adding at the back; none adds once the hold has ended.
        lock (hold.Gate)
        {
            var buffer = hold.Buffer;
            var n = Math.Min(buffer.Count, hold.BurstSize);
            if (hold.DrainsToSelf) WriteToTun(buffer, n);
            else SendHeld(buffer, n, hold.DrainTo);
            buffer.RemoveFirst(n);
            hold.Flushed += n;
            Owner.Egress.Flushed += n;
            hold.NextBurst = now + BurstGap;
            if (buffer.Count == 0) End(hold, 0, resume: true); // the window reopens once all held is on its way
        }
    }

    void WriteToTun(HoldBuffer buffer, int n)
    {
        for (var i = 0; i < n; i++)
            if (!Owner.Tun.Write(buffer.Slot(i) + Wire.HeaderSize, buffer.Length(i)))
                Owner.Egress.Drops.Add(DropReason.IoError);
    }

    /// <summary>
    /// Held packets are wrapped in place and sent as one batch, borrowing the egress batch's headers.
    /// </summary>
    void SendHeld(HoldBuffer buffer, int n, Locator toHost)
    {
        if (n == 0) return;
        var epoch = Table.Epoch;
        var to = UdpEndpoint.SockAddr(toHost, _port);
        var owner = Owner;
        var m = 0; // the batch is empty between the egress loop's batches (Send leaves it so)
        for (var i = 0; i < n; i++)
        {
            var len = buffer.Length(i);
            var sealing = Seal(owner, toHost, buffer.Slot(i), len, epoch, out var datagram);
            if (sealing != DropReason.None)
            {
                owner.Egress.Drops.Add(sealing);
                continue;
            }
            owner.Out.Append(m, buffer.Slot(i), datagram, to);
            m++;
        }
        Send(owner, owner.Out, owner.Egress);
    }

    /// <summary>
    /// Ends a hold: gone from the table of holds, its peers' windows reopened (unless forgotten),
    /// its releases answered, and any hold queued behind its drain begun.
    /// </summary>
    void End(Hold hold, long droppedAtEnd, bool resume)
    {
        lock (hold.Gate)
        {
            hold.Ended = true;
            if (resume) ResumeFlows(hold.Locator);
        }
        _holds.Remove(hold.Locator.Value);
        PublishHolds();
        var result = (Flushed: hold.Flushed, Dropped: hold.Buffer.Dropped + droppedAtEnd);
        foreach (var w in hold.Waiters) w.TrySetResult(result);
        var kind = hold.Expired ? HoldChangeKind.Expired : HoldChangeKind.Released;
        Tell(kind, hold, hold.Draining ? hold.DrainTo : Locator.None, result.Flushed, result.Dropped);
        // Unmapping and deleting a spool file takes the kernel a while: not on this thread.
        if (hold.Buffer.SpoolPath is null) hold.Dispose();
        else ThreadPool.UnsafeQueueUserWorkItem(static h => h.Dispose(), hold, preferLocal: false);
        foreach (var (begin, _) in hold.AfterDrain) begin();
    }

    /// <summary>On shutdown: every release still waiting gets what its drain did so far; spools are kept.</summary>
    void AbandonHolds()
    {
        foreach (var hold in _holds.Values)
        {
            var left = (hold.Flushed, hold.Buffer.Dropped + hold.Buffer.Count);
            foreach (var w in hold.Waiters) w.TrySetResult(left);
            foreach (var (_, refuse) in hold.AfterDrain) refuse(new ObjectDisposedException(nameof(Engine)));
            // The spool stays: the next agent on this host delivers what is still held.
            hold.Buffer.Detach();
        }
        _holds.Clear();
        Volatile.Write(ref _held, []);
        // The lanes have stopped: their counts are final, and a cut still waiting is answered with them.
        foreach (var (_, answer) in _cuts) answer();
        _cuts.Clear();
    }
}
