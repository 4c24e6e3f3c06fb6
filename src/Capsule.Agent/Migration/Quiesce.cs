using System.Diagnostics;
using System.Globalization;

namespace Capsule.Agent.Migration;

/// <summary>Waits, just before the freeze, for what CRIU would otherwise lose.</summary>
internal static class Quiesce
{
    // Generous: the capsule runs on (only its peers wait, held), and on a busy host a process may
    // not be scheduled for a few hundred milliseconds.
    static readonly TimeSpan UdpWait = TimeSpan.FromSeconds(1);

    /// <summary>How long closing connections may go without progress before a move stops waiting for them.</summary>
    static readonly TimeSpan ClosingStall = TimeSpan.FromSeconds(2);

    /// <summary>The longest a move waits for closing connections that do make progress.</summary>
    static readonly TimeSpan ClosingMax = TimeSpan.FromSeconds(10);

    /// <summary>
    /// A connection the capsule has closed while data or its FIN were still unacknowledged lives on
    /// in the kernel (an orphan: no process holds it), so CRIU cannot checkpoint it; after the move
    /// the peer's acknowledgements would reach a namespace with no socket and get a reset (seen: an
    /// HTTP server that closed after writing a download, its last megabytes still in its send
    /// buffer, for a client reading 2 MB/s). Such connections finish on their own once nothing
    /// holds their peers' packets, so a move waits for them before its sync begins, as long as
    /// they make progress (their unsent bytes go down) and at most <see cref="ClosingMax"/>.
    /// Returns how many are left.
    /// </summary>
    public static async Task<int> ClosingConnectionsAsync(int pid, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var progressAt = TimeSpan.Zero;
        var previous = long.MaxValue;
        while (true)
        {
            var (left, bytes) = Closing(pid);
            if (left == 0) return 0;
            if (bytes < previous) progressAt = sw.Elapsed;
            previous = bytes;
            if (sw.Elapsed - progressAt > ClosingStall || sw.Elapsed > ClosingMax) return left;
            await Task.Delay(5, ct);
        }
    }

    /// <summary>TCP sockets of the namespace that no process owns (inode 0) with unacknowledged data.</summary>
    public static int ClosingWithDataInFlight(int pid) => Closing(pid).Count;

    static (int Count, long Bytes) Closing(int pid)
    {
        var (n, bytes) = (0, 0L);
        try
        {
            // "sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode", numbers in hex.
            foreach (var line in File.ReadLines($"/proc/{pid}/net/tcp").Skip(1))
            {
                var cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (cols.Length < 10 || cols[9] != "0") continue;
                // FIN_WAIT1 (04), LAST_ACK (09), CLOSING (0B): closed by the capsule, not yet done.
                if (cols[3] is not ("04" or "09" or "0B")) continue;
                var tx = long.Parse(cols[4].Split(':')[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                if (tx == 0) continue;
                n++;
                bytes += tx;
            }
        }
        catch (IOException)
        {
            return (0, 0);
        }
        return (n, bytes);
    }

    /// <summary>
    /// CRIU does not save the datagrams waiting in a UDP socket (criu issue 1130): they would be
    /// lost with the freeze. Peers hold from the cut on, and the seal sends this host's own to its
    /// hold, so no new ones come; give the capsule a
    /// moment (bounded) to read those already queued. Returns the bytes still queued at the end.
    /// </summary>
    public static async Task<long> UdpQueuesAsync(int pid, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var queued = UdpReceiveQueued(pid);
            if (queued == 0 || sw.Elapsed > UdpWait) return queued;
            await Task.Delay(1, ct);
        }
    }

    /// <summary>Bytes in the receive queues of the UDP sockets of <paramref name="pid"/>'s network namespace.</summary>
    static long UdpReceiveQueued(int pid)
    {
        long total = 0;
        try
        {
            // "sl local_address rem_address st tx_queue:rx_queue ...", queues in hex.
            foreach (var line in File.ReadLines($"/proc/{pid}/net/udp").Skip(1))
            {
                var cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (cols.Length < 5) continue;
                var queues = cols[4].Split(':');
                if (queues.Length == 2)
                    total += long.Parse(queues[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            }
        }
        catch (IOException)
        {
            return 0; // the tree is gone: nothing to wait for
        }
        return total;
    }
}
