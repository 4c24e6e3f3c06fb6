using Capsule.Trust;
using Grpc.Core;

namespace Capsule.Hosting;

/// <summary>How a call's caller was told apart (see <see cref="Caller.Of"/>).</summary>
public enum CallerKind
{
    /// <summary>A daemon served without TLS: nobody is known, everything is let through (it warned at start).</summary>
    Unverified,
    /// <summary>This machine's unix socket, already limited to root and the daemon's own user (SO_PEERCRED).</summary>
    Local,
    Admin,
    Reader,
    Host,
    /// <summary>A certificate of the cluster CA for no caller role (the directory's own): it may only read.</summary>
    Other,
}

/// <summary>
/// Who made a gRPC call, from what the connection proved: the client certificate TLS validated against the
/// cluster CA, or the unix socket it came in on. Resource rules (a host changes only its own records) use
/// <see cref="Name"/>, the certificate's CN.
/// </summary>
public sealed record Caller(CallerKind Kind, string Name)
{
    /// <summary>May do anything: an admin operator, a local root user, or anyone on a daemon without TLS.</summary>
    public bool IsAdmin => Kind is CallerKind.Admin or CallerKind.Local or CallerKind.Unverified;

    /// <summary>True for a host's agent, naming the host.</summary>
    public bool IsHost(out string host)
    {
        host = Kind == CallerKind.Host ? Name : "";
        return Kind == CallerKind.Host;
    }

    public override string ToString() => Kind switch
    {
        CallerKind.Unverified => "an unverified caller",
        CallerKind.Local => "a local user",
        CallerKind.Admin => $"operator {Name} (admin)",
        CallerKind.Reader => $"operator {Name} (reader)",
        CallerKind.Host => $"host {Name}",
        _ => Name,
    };

    public static Caller Of(ServerCallContext context)
    {
        var http = context.GetHttpContext();
        if (http.Connection.ClientCertificate is { } cert)
        {
            // Kestrel validated it against the cluster CA before the call began (DaemonHost).
            var id = PeerIdentity.Of(cert);
            return id?.Kind switch
            {
                PeerKind.Admin => new Caller(CallerKind.Admin, id.Name),
                PeerKind.Reader => new Caller(CallerKind.Reader, id.Name),
                PeerKind.Host => new Caller(CallerKind.Host, id.Name),
                _ => new Caller(CallerKind.Other, id?.ToString() ?? cert.Subject),
            };
        }
        if (http.Request.IsHttps)
            throw new RpcException(new Status(StatusCode.Unauthenticated,
                "this call needs a client certificate of the cluster CA"));
        // No certificate over plain HTTP: a unix socket, or a TCP port of a daemon without TLS.
        return http.Connection.LocalIpAddress is not null
            ? new Caller(CallerKind.Unverified, "")
            : new Caller(CallerKind.Local, "");
    }

    /// <summary>The refusal for a caller that may not do what it asked, in words for people.</summary>
    public RpcException Denied(string what) =>
        new(new Status(StatusCode.PermissionDenied, $"{this} may not {what}"));
}
