using System.Diagnostics;
using System.Globalization;

namespace Capsule.Agent.Migration;

/// <summary>Waits, just before the freeze, for what CRIU would otherwise lose.</summary>
internal static class Quiesce
{
    // Generous: the capsule runs on (only its peers wait, held), and on a busy host a process may
    // not be scheduled for a few hundred milliseconds.
    static readonly TimeSpan UdpWait = TimeSpan.FromSeconds(1);

    /// <summary>How long a move waits, before it holds anything, for closing connections to finish.</summary>
    static readonly TimeSpan ClosingWait = TimeSpan.FromSeconds(2);

    /// <summary>
    /// A connection the capsule has closed while data or its FIN were still unacknowledged lives on
    /// in the kernel (an orphan: no process holds it), so CRIU cannot checkpoint it; after the move
    /// the peer's acknowledgements would reach a namespace with no socket and get a reset (seen: an
    /// HTTP server that closed after writing a download, its last megabyte still in flight). Such
    /// connections finish on their own within a few round trips once nothing holds their peers'
    /// packets, so a move waits for them, bounded, before its sync begins. Returns how many are left.
    /// </summary>
    public static async Task<int> ClosingConnectionsAsync(int pid, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var left = ClosingWithDataInFlight(pid);
            if (left == 0 || sw.Elapsed > ClosingWait) return left;
            await Task.Delay(5, ct);
        }
    }

    /// <summary>TCP sockets of the namespace that no process owns (inode 0) with unacknowledged data.</summary>
    public static int ClosingWithDataInFlight(int pid)
    {
        var n = 0;
        try
        {
            // "sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout inode", numbers in hex.
            foreach (var line in File.ReadLines($"/proc/{pid}/net/tcp").Skip(1))
            {
                var cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (cols.Length < 10 || cols[9] != "0") continue;
                // FIN_WAIT1 (04), LAST_ACK (09), CLOSING (0B): closed by the capsule, not yet done.
                if (cols[3] is not ("04" or "09" or "0B")) continue;
                var tx = cols[4].Split(':')[0];
                if (long.Parse(tx, NumberStyles.HexNumber, CultureInfo.InvariantCulture) > 0) n++;
            }
        }
        catch (IOException)
        {
            return 0;
        }
        return n;
    }

    /// <summary>
    /// CRIU does not save the datagrams waiting in a UDP socket (criu issue 1130): they would be
    /// lost with the freeze. Peers hold from the cut on, so no new ones come; give the capsule a
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
