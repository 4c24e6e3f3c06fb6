using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;

namespace Capsule.Hosting;

/// <summary>
/// Who may use a daemon's unix socket: root and the daemon's own user, by the connecting process's uid as the
/// kernel reports it (SO_PEERCRED), not by what the caller claims. The socket's file mode alone would depend on
/// the folder it is made in; this holds wherever it is.
/// </summary>
internal static partial class PeerCredentials
{
    const int SolSocket = 1;
    const int SoPeercred = 17;

    [LibraryImport("libc")]
    private static partial uint geteuid();

    static readonly uint Own = geteuid();

    /// <summary>The uid of the process at the other end of <paramref name="socket"/>, or null if unknown.</summary>
    public static uint? Uid(Socket socket)
    {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        Span<byte> ucred = stackalloc byte[12];
        try
        {
            return socket.GetRawSocketOption(SolSocket, SoPeercred, ucred) == 12
                ? MemoryMarshal.Read<uint>(ucred[4..]) : null;
        }
        catch (SocketException)
        {
            return null;
        }
    }

    public static bool Allowed(uint uid) => uid == 0 || uid == Own;

    /// <summary>A connection middleware for a unix listener: drops callers that are neither root nor us.</summary>
    public static Func<ConnectionDelegate, ConnectionDelegate> Check(ILogger log, string path) => next => async ctx =>
    {
        var uid = ctx.Features.Get<IConnectionSocketFeature>()?.Socket is { } s ? Uid(s) : null;
        if (uid is { } u && Allowed(u))
        {
            await next(ctx);
            return;
        }
        DaemonLog.PeerRefused(log, path, uid?.ToString() ?? "unknown");
        ctx.Abort(new ConnectionAbortedException("only root and the daemon's own user may use this socket"));
    };
}

/// <summary>The daemons' own log messages about who may call them.</summary>
internal static partial class DaemonLog
{
    [LoggerMessage(EventId = 9001, Level = LogLevel.Warning,
        Message = "refused a caller on {Socket}: uid {Uid} is neither root nor this daemon's user")]
    public static partial void PeerRefused(ILogger log, string socket, string uid);

    [LoggerMessage(EventId = 9002, Level = LogLevel.Warning,
        Message = "no Tls section in the config: {Endpoint} serves control calls unauthenticated, to anyone who " +
            "reaches it. Make certificates with `capsule cluster init` and `capsule host add` (docs/security.md)")]
    public static partial void Unauthenticated(ILogger log, string endpoint);

    [LoggerMessage(EventId = 9003, Level = LogLevel.Information,
        Message = "refused a TLS caller: its client certificate ({Subject}) is not the cluster CA's: {Why}")]
    public static partial void ClientRefused(ILogger log, string subject, string why);

    [LoggerMessage(EventId = 9004, Level = LogLevel.Warning, Message = "denied {Caller} the call {Method}")]
    public static partial void CallDenied(ILogger log, string caller, string method);
}
