using System.Collections.Concurrent;
using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;

namespace Capsule.Rpc;

/// <summary>
/// gRPC channels to agents and the directory. An endpoint is `unix:/path/to.sock` (the lab and a
/// single machine: no network traffic at all for control) or `http://host:port`.
/// </summary>
public static class Channels
{
    static readonly ConcurrentDictionary<string, GrpcChannel> Cache = new();

    public static GrpcChannel For(string endpoint) => Cache.GetOrAdd(endpoint, Create);

    /// <summary>
    /// A channel of its own (its own connection), not shared: for a caller standing in for one of
    /// many separate clients, as a benchmark's watchers stand in for agents.
    /// </summary>
    public static GrpcChannel Create(string endpoint)
    {
        if (!endpoint.StartsWith("unix:", StringComparison.Ordinal))
            return GrpcChannel.ForAddress(endpoint);
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
        return GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler });
    }

    /// <summary>Turns a gRPC failure into the sentence the server meant for people.</summary>
    public static string Describe(RpcException e, string endpoint) => e.StatusCode switch
    {
        StatusCode.Unavailable =>
            $"cannot reach {endpoint} (is it running? `capsule lab up` starts a lab): {e.Status.Detail}",
        _ => e.Status.Detail,
    };
}
