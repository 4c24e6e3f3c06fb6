using System.Diagnostics;
using System.Globalization;

namespace Capsule.Agent.Migration;

/// <summary>Waits, just before the freeze, for what CRIU would otherwise lose.</summary>
internal static class Quiesce
{
    // Generous: the capsule runs on (only its peers wait, held), and on a busy host a process may
    // not be scheduled for a few hundred milliseconds.
    static readonly TimeSpan UdpWait = TimeSpan.FromSeconds(1);

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
