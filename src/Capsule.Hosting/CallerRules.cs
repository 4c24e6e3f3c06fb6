using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.Extensions.Logging;

namespace Capsule.Hosting;

/// <summary>Who may make a call: the kinds of caller a rule lets in.</summary>
[Flags]
public enum Callers
{
    None = 0,
    Admin = 1,
    Reader = 2,
    Host = 4,
    /// <summary>Reading: every kind of caller the cluster CA vouches for.</summary>
    Anyone = Admin | Reader | Host,
}

/// <summary>
/// A daemon's rule table: for each gRPC method (by its short name), which callers may make it. A method not in
/// the table is for admins only, so a new call is closed until someone writes its rule.
/// </summary>
public sealed class CallerRules(string service, IReadOnlyDictionary<string, Callers> rules)
{
    public string Service => service;

    public Callers For(string method) =>
        method.StartsWith(service + "/", StringComparison.Ordinal)
        && rules.TryGetValue(method[(method.LastIndexOf('/') + 1)..], out var who) ? who : Callers.Admin;
}

/// <summary>
/// Checks every call against the daemon's <see cref="CallerRules"/> by who made it (<see cref="Caller.Of"/>):
/// the client certificate TLS validated (a host, or an operator with its role), or, on a unix socket (already
/// limited by SO_PEERCRED to root and the daemon's own user), an admin. A daemon served without TLS lets every
/// call through: it has no identity to check, and says so at start. Which record a host may change is the
/// services' own check, after this one.
/// </summary>
public sealed class CallerCheck(IEnumerable<CallerRules> rules, ILogger<CallerCheck> log) : Interceptor
{
    readonly CallerRules[] _rules = [.. rules];

    void Check(ServerCallContext context)
    {
        Caller caller;
        try
        {
            caller = Caller.Of(context);
        }
        catch (RpcException)
        {
            DaemonLog.CallDenied(log, "a caller without a client certificate", context.Method);
            throw;
        }
        if (caller.IsAdmin) return;
        var kind = caller.Kind switch
        {
            CallerKind.Reader => Callers.Reader,
            CallerKind.Host => Callers.Host,
            _ => Callers.Reader, // a cluster certificate of no caller role (the directory's): it may read
        };
        var allowed = _rules.Select(r => r.For(context.Method)).Aggregate(Callers.None, (a, b) => a | b);
        if ((allowed & kind) == 0)
            throw Deny(context, caller.ToString(), StatusCode.PermissionDenied,
                $"{caller} may not call {ShortName(context.Method)}: " + Needs(allowed));
    }

    RpcException Deny(ServerCallContext context, string who, StatusCode code, string sentence)
    {
        DaemonLog.CallDenied(log, who, context.Method);
        return new RpcException(new Status(code, sentence));
    }

    static string ShortName(string method) => method[(method.LastIndexOf('/') + 1)..];

    static string Needs(Callers allowed) =>
        allowed == Callers.Admin ? "only an admin operator may"
        : (allowed & Callers.Admin) != 0 && (allowed & Callers.Host) != 0 ? "only an admin operator or a host may"
        : "it is not allowed to this caller";

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request,
        ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, ServerCallContext context,
        ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(requestStream, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context,
        ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, responseStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context,
        DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(requestStream, responseStream, context);
    }
}
