using System.Globalization;
using System.Net;
using Capsule.Protos;

namespace Capsule.Agent.Migration;

/// <summary>
/// A capsule's TCP and UDP sockets, as its network namespace's kernel lists them (/proc/PID/net/tcp and udp, which
/// show the namespace of PID): the flows of the per-connection report, read on the source before the sync and on
/// the target after the restore. IPv4 only, as capsule addresses are; listening TCP sockets are not flows.
/// </summary>
internal static class CapsuleSockets
{
    static readonly string[] TcpStates =
    [
        "", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
        "LAST_ACK", "LISTEN", "CLOSING",
    ];
    const int Listen = 0x0A;

    public static List<FlowReport> Read(int pid)
    {
        var flows = new List<FlowReport>();
        Add(flows, pid, "tcp");
        Add(flows, pid, "udp");
        return flows;
    }

    static void Add(List<FlowReport> flows, int pid, string protocol)
    {
        IEnumerable<string> lines;
        try
        {
            lines = File.ReadLines($"/proc/{pid}/net/{protocol}").Skip(1).ToList();
        }
        catch (IOException)
        {
            return; // the process is gone: it has no sockets to report
        }
        foreach (var line in lines)
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 4) continue;
            var state = int.Parse(f[3], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (protocol == "tcp" && state == Listen) continue;
            var peer = Endpoint(f[2]);
            flows.Add(new FlowReport
            {
                Protocol = protocol, Local = Endpoint(f[1]),
                // An unconnected UDP socket has no peer of its own (0.0.0.0:0).
                Peer = peer == "0.0.0.0:0" ? "*" : peer,
                State = protocol == "tcp" && state < TcpStates.Length ? TcpStates[state]
                    : state == 1 ? "CONNECTED" : "UNCONNECTED",
            });
        }
    }

    /// <summary>"0100007F:0050" (the address as the host stores it, little-endian here) to "127.0.0.1:80".</summary>
    static string Endpoint(string hex)
    {
        var colon = hex.IndexOf(':');
        var addr = uint.Parse(hex.AsSpan(0, colon), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        var port = int.Parse(hex.AsSpan(colon + 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        return $"{new IPAddress(addr)}:{port}";
    }
}
