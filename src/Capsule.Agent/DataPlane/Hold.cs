using Capsule.Core;

namespace Capsule.Agent.DataPlane;

/// <summary>
/// One locator's hold on this host (seed Fig. 6): its buffer, the lease that ends it if nobody
/// releases it, and, once released (or expired towards a known host), its drain. Lane 0's egress thread owns it;
/// another lane that reads a packet for its locator adds it to the buffer under <see cref="Gate"/>, which the owner
/// takes too whenever it touches the buffer or ends the hold.
/// </summary>
internal sealed class Hold(Locator locator, HoldBuffer buffer, long deadline, bool pauses) : IDisposable
{
    public Locator Locator { get; } = locator;
    public HoldBuffer Buffer { get; } = buffer;
    public Lock Gate { get; } = new();

    /// <summary>Ended (set under <see cref="Gate"/>): a lane whose copy of the holds still has it forwards.</summary>
    public bool Ended { get; set; }

    /// <summary>Stopwatch timestamp at which the lease runs out (while holding; a drain has none).</summary>
    public long Deadline { get; private set; } = deadline;

    /// <summary>Whether this hold paused the capsule's TCP peers with a zero window.</summary>
    public bool Pauses { get; set; } = pauses;

    public bool Draining { get; private set; }
    public Locator DrainTo { get; private set; }

    /// <summary>The drain writes into this host's own TUN (the capsule is local).</summary>
    public bool DrainsToSelf { get; private set; }

    /// <summary>Its lease ran out with no release (whatever it drains now, it ends as expired).</summary>
    public bool Expired { get; set; }

    /// <summary>Stopwatch timestamp of the drain's next burst.</summary>
    public long NextBurst { get; set; }

    /// <summary>Stopwatch timestamp at which the drain began.</summary>
    public long DrainBegan { get; private set; }

    public long Flushed { get; set; }

    /// <summary>Releases waiting for the drain to end, with (flushed, dropped).</summary>
    public List<TaskCompletionSource<(long Flushed, long Dropped)>> Waiters { get; } = [];

    /// <summary>Holds asked for while this one drains: they begin the moment it ends (refused at shutdown).</summary>
    public List<(Action Begin, Action<Exception> Refuse)> AfterDrain { get; } = [];

    /// <summary>When the owner's egress thread must next look at this hold.</summary>
    public long Due => Draining ? NextBurst : Deadline;

    /// <summary>A lease is only ever extended by a renewal, never shortened.</summary>
    public void Renew(long deadline) => Deadline = Math.Max(Deadline, deadline);

    /// <summary>Stopwatch timestamp at which the hold began.</summary>
    public long Started { get; } = System.Diagnostics.Stopwatch.GetTimestamp();

    /// <summary>Packets sent per burst (one burst a millisecond), set when the drain begins.</summary>
    public int BurstSize { get; private set; } = MinBurst;

    const int MinBurst = 8, MaxBurst = 64;

    public void DrainTowards(Locator host, bool self, long now)
    {
        // Paced at four times the rate the packets arrived at (at least 8 a millisecond): the
        // capsule just restored has socket buffers of ordinary size and read them at about the
        // arrival rate before it moved; a flush at line rate overflowed a UDP receiver's buffer
        // (its RcvbufErrors equalled every datagram lost), one this paced keeps up with.
        var seconds = Math.Max((now - Started) / (double)System.Diagnostics.Stopwatch.Frequency, 0.001);
        var perMs = 4 * Buffer.Count / seconds / 1000;
        BurstSize = (int)Math.Clamp(Math.Ceiling(perMs), MinBurst, MaxBurst);
        Draining = true;
        DrainTo = host;
        DrainsToSelf = self;
        NextBurst = now;
        DrainBegan = now;
        Buffer.Draining = true;
    }

    public void Dispose() => Buffer.Dispose();
}
