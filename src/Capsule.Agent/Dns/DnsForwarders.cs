using System.Net;
using System.Net.Sockets;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Dns;

/// <summary>
/// The host's own resolvers (nameserver lines of /etc/resolv.conf), for names that are not capsules'. One is
/// used only if this host has a route to it: in a network namespace with no way out (a lab's simulated host)
/// a query is then refused at once instead of waiting for an answer that cannot come.
/// </summary>
internal sealed class DnsForwarders(string resolvConf = "/etc/resolv.conf")
{
    public const int TimeoutMs = 2000;

    IReadOnlyList<IPAddress> Configured()
    {
        try
        {
            return File.ReadLines(resolvConf)
                .Select(l => l.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
                .Where(p => p.Length >= 2 && p[0] == "nameserver")
                .Select(p => IPAddress.TryParse(p[1], out var a) ? a : null)
                .OfType<IPAddress>()
                // Never itself: a capsule's resolver that points at its agent must not loop back here.
                .Where(a => a.AddressFamily == AddressFamily.InterNetwork
                    && !a.Equals(IPAddress.Parse(HostNetwork.CapsuleGateway)))
                .ToList();
        }
        catch (IOException) { return []; }
        catch (UnauthorizedAccessException) { return []; }
    }

    /// <summary>Those the kernel has a route to now (a UDP connect sends nothing).</summary>
    public IReadOnlyList<IPAddress> Reachable() => [.. Configured().Where(Routable)];

    static bool Routable(IPAddress server)
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            probe.Connect(server, CapsuleDnsServer.Port);
            return true;
        }
        catch (SocketException) { return false; }
    }

    public string Describe()
    {
        var all = Configured();
        var reachable = Reachable();
        return all.Count == 0 ? "refused (no nameserver in " + resolvConf + ")"
            : reachable.Count == 0 ? $"refused ({string.Join(", ", all)} not routable from here)"
            : $"forwarded to {string.Join(", ", reachable)}";
    }
}
