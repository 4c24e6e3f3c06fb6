using System.Net;
using System.Net.Sockets;
using ARSoft.Tools.Net.Dns;
using Capsule.Core;

namespace Capsule.Agent.Dns;

/// <summary>
/// UDP for the DNS library's server, on a socket of our own: bound with IP_FREEBIND, so the capsules' next
/// hop (on every capsule veth, but on none while the host has no capsule) can be bound before it exists;
/// datagrams that fail <see cref="CapsuleDns.Check"/> or do not parse are dropped and counted before the
/// server sees them; no answer leaves larger than <see cref="CapsuleDns.MaxAmplification"/> times its query.
/// </summary>
internal sealed class DnsTransport(IPEndPoint bind, DnsCounters counters) : IServerTransport
{
    const int SolIp = 0; // linux/in.h
    const int IpFreebind = 15;
    readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    readonly DnsCounters _counters = counters;

    public IPEndPoint Endpoint => bind;
    public ushort DefaultAllowedResponseSize => 512;
    public bool SupportsMultipleResponses => false;
    public bool AllowTruncatedResponses => true;
    public TransportProtocol TransportProtocol => TransportProtocol.Udp;

    public void Bind()
    {
        // Raw: .NET names no IP_FREEBIND, and refuses option numbers it does not know.
        _socket.SetRawSocketOption(SolIp, IpFreebind, BitConverter.GetBytes(1));
        _socket.Bind(bind);
    }

    public void Close() => _socket.Close();

    public void Dispose() => _socket.Dispose();

    public async Task<IServerConnection?> AcceptConnectionAsync(CancellationToken token)
    {
        var buffer = new byte[CapsuleDns.MaxQuery + 1];
        var errors = 0;
        while (true)
        {
            SocketReceiveFromResult got;
            // The library's accept loop is an async void: an exception out of here would end the agent. On a
            // stop (cancelled, socket closed) null tells the loop to look at its token and end.
            try
            {
                got = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0),
                    token);
            }
            catch (Exception e) when (token.IsCancellationRequested || e is ObjectDisposedException)
            {
                return null;
            }
            catch (SocketException)
            {
                // Mostly a transient error of one datagram (ICMP news of an earlier answer): wait on the next.
                // Errors in a row mean a socket that keeps failing: they back off (4 ms, doubling, up to about a
                // second) rather than spin this loop.
                if (++errors > 1 && !await BackOffAsync(errors, token)) return null;
                continue;
            }
            errors = 0;
            var query = buffer.AsSpan(0, got.ReceivedBytes).ToArray();
            var drop = Screen(query);
            if (drop != DnsDrop.None)
            {
                _counters.Count(drop);
                continue;
            }
            var from = (IPEndPoint)got.RemoteEndPoint;
            return new Connection(this, new DnsReceivedRawPackage(WithLength(query), from, bind));
        }
    }

    /// <summary>False when the wait was cut short by a stop (nothing may be thrown to the library's loop).</summary>
    static async Task<bool> BackOffAsync(int errors, CancellationToken token)
    {
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(1 << Math.Min(errors, 10)), token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>
    /// The library keeps a message as TCP frames it, after a 2-byte length (what a raw package's array must
    /// hold), and hands UDP the bytes after it.
    /// </summary>
    static byte[] WithLength(byte[] message)
    {
        var framed = new byte[message.Length + 2];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(framed, (ushort)message.Length);
        message.CopyTo(framed, 2);
        return framed;
    }

    /// <summary>The header checks, then whether the library can read it at all.</summary>
    static DnsDrop Screen(byte[] query)
    {
        var drop = CapsuleDns.Check(query);
        if (drop != DnsDrop.None) return drop;
        try
        {
            DnsMessage.Parse(query);
            return DnsDrop.None;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return DnsDrop.Unparsable;
        }
    }

    /// <summary>One query and its answer: UDP has no connection, so each datagram is one.</summary>
    sealed class Connection(DnsTransport transport, DnsReceivedRawPackage query) : IServerConnection
    {
        public IServerTransport Transport => transport;
        public IPEndPoint RemoteEndPoint => query.RemoteEndpoint;
        public IPEndPoint LocalEndPoint => query.LocalEndpoint;
        public bool CanRead { get; private set; } = true;

        public Task<bool> InitializeAsync(CancellationToken token) => Task.FromResult(true);

        public Task<DnsReceivedRawPackage?> ReceiveAsync(CancellationToken token)
        {
            CanRead = false;
            return Task.FromResult<DnsReceivedRawPackage?>(query);
        }

        public async Task<bool> SendAsync(DnsRawPackage response, CancellationToken token)
        {
            var bytes = response.ToArraySegment(false);
            var queryLength = query.ToArraySegment(false).Count;
            byte[] payload;
            if (CapsuleDns.Fits(queryLength, bytes.Count))
                payload = bytes.ToArray();
            else
            {
                transport._counters.CountTruncated();
                payload = CapsuleDns.Truncated(bytes);
            }
            await transport._socket.SendToAsync(payload, SocketFlags.None, query.RemoteEndpoint, token);
            return true;
        }

        public void Dispose() { }
    }
}
