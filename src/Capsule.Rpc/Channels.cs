using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Capsule.Trust;
using Grpc.Core;
using Grpc.Net.Client;

namespace Capsule.Rpc;

/// <summary>
/// gRPC channels to agents and the directory. An endpoint is `unix:/path/to.sock` (the lab and a
/// single machine: no network traffic at all for control), `https://host:port` (mutual TLS with this process's
/// <see cref="Identity"/>) or `http://host:port` (a cluster without certificates).
/// </summary>
public static class Channels
{
    static readonly ConcurrentDictionary<string, GrpcChannel> Cache = new();

    /// <summary>
    /// Who this process is on https:// connections (a daemon's host certificate, an operator's): its certificate
    /// is presented to servers, and servers must present one of the same cluster CA naming the host or address
    /// dialled. Set once, before the first channel is made.
    /// </summary>
    public static TlsIdentity? Identity { get; private set; }

    public static void UseIdentity(TlsIdentity identity)
    {
        if (!Cache.IsEmpty) throw new InvalidOperationException("the TLS identity is set before any channel is made");
        Identity = identity;
    }

    public static GrpcChannel For(string endpoint) => Cache.GetOrAdd(endpoint, Create);

    /// <summary>
    /// A channel of its own (its own connection), not shared: for a caller standing in for one of
    /// many separate clients, as a benchmark's watchers stand in for agents.
    /// </summary>
    public static GrpcChannel Create(string endpoint)
    {
        if (endpoint.StartsWith("https:", StringComparison.Ordinal)) return Secure(endpoint);
        if (!endpoint.StartsWith("unix:", StringComparison.Ordinal))
            return GrpcChannel.ForAddress(endpoint, Options(null));
        var path = endpoint["unix:".Length..];
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
        };
        return GrpcChannel.ForAddress("http://localhost", Options(handler));
    }

    /// <summary>
    /// Mutual TLS: our certificate to the server; the server's validated against the cluster CA alone (the chain
    /// policy) and against the name or address dialled (SslStream's own name check, which the policy leaves on).
    /// </summary>
    static GrpcChannel Secure(string endpoint)
    {
        var identity = Identity ?? throw new InvalidOperationException(
            $"{endpoint} is https:// and this process has no certificate: give the context --ca, --cert and --key " +
            "(`capsule context set`), or the daemon's config a Tls section");
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = [identity.Certificate],
                CertificateChainPolicy = ClusterTrust.Policy(identity.Ca, Oids.ServerAuth),
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
            },
        };
        return GrpcChannel.ForAddress(endpoint, Options(handler));
    }

    /// <summary>
    /// A channel fails every call at once while it waits to connect again after a refused connection, and it waits
    /// longer after each (1 s, growing to 2 min, by default). Channels are cached per endpoint and an agent calls its
    /// peers from its first second (data-plane keys), often before they listen: with the default, a migration to a
    /// host that came up a moment later failed with "Error connecting to subchannel". Kept short here.
    /// </summary>
    static GrpcChannelOptions Options(HttpMessageHandler? handler) => new()
    {
        HttpHandler = handler,
        InitialReconnectBackoff = TimeSpan.FromMilliseconds(100),
        MaxReconnectBackoff = TimeSpan.FromMilliseconds(500),
    };

    /// <summary>Turns a gRPC failure into the sentence the server meant for people.</summary>
    public static string Describe(RpcException e, string endpoint) => e.StatusCode switch
    {
        StatusCode.Unavailable =>
            $"cannot reach {endpoint} (is it running? `capsule lab up` starts a lab): {e.Status.Detail}",
        _ => e.Status.Detail,
    };
}
