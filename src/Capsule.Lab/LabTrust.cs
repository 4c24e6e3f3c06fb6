using System.Net;
using Capsule.Hosting;
using Capsule.Trust;

namespace Capsule.Lab;

/// <summary>
/// A lab's certificates, made as an operator makes a cluster's: a cluster CA in the lab's run folder
/// (`capsule cluster init`), a certificate per host and one for the directory (`capsule host add`), each daemon's
/// config pointing at its own. A host restarted keeps the certificate it had.
/// </summary>
internal static class LabTrust
{
    /// <summary>The Tls section for <paramref name="name"/> at <paramref name="address"/> (issued once).</summary>
    public static TlsConfig For(LabPaths paths, string name, string address, PeerKind kind = PeerKind.Host)
    {
        using var ca = File.Exists(Path.Combine(paths.CaDir, ClusterCa.CaCertFile))
            ? ClusterCa.Open(paths.CaDir) : ClusterCa.Create(paths.CaDir);
        var folder = Path.Combine(paths.CaDir, "hosts", name);
        if (!Directory.Exists(folder)) ca.IssueHost(name, IPAddress.Parse(address), kind);
        return new TlsConfig
        {
            Ca = Path.Combine(folder, ClusterCa.CaCertFile),
            Cert = Path.Combine(folder, name + ".crt"),
            Key = Path.Combine(folder, name + ".key"),
        };
    }

    /// <summary>Issues an operator's certificate in the lab's CA (for tests acting as an operator over TCP).</summary>
    public static IssuedFiles Operator(LabPaths paths, string name, PeerKind role)
    {
        using var ca = ClusterCa.Open(paths.CaDir);
        return ca.IssueOperator(name, role);
    }
}
