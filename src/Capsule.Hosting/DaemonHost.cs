using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Capsule.Trust;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Hosting;

/// <summary>What both daemons (the agent and the directory) serve gRPC with: Kestrel, logging, a clean stop.</summary>
public static class DaemonHost
{
    /// <summary>
    /// Logging and Kestrel endpoints speaking HTTP/2 for gRPC: unix sockets (callers checked by uid, see
    /// <see cref="PeerCredentials"/>), https://addr:port (mutual TLS: only callers with a certificate of the
    /// cluster CA in <paramref name="tls"/> get as far as HTTP) or, without a Tls section, http://addr:port.
    /// </summary>
    public static void ConfigureCommon(WebApplicationBuilder builder, IReadOnlyList<string> endpoints, LogLevel level,
        TlsIdentity? tls)
    {
        DaemonLogging.Configure(builder, level);
        builder.Services.AddGrpc(o => o.Interceptors.Add(typeof(CallerCheck)));
        builder.WebHost.ConfigureKestrel(k =>
        {
            var log = k.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger("Capsule.Security");
            foreach (var listen in endpoints)
            {
                if (listen.StartsWith("unix:", StringComparison.Ordinal))
                {
                    var path = listen["unix:".Length..];
                    if (File.Exists(path)) File.Delete(path); // stale socket from a crash
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    k.ListenUnixSocket(path, l =>
                    {
                        l.Protocols = HttpProtocols.Http2;
                        l.Use(PeerCredentials.Check(log, path));
                    });
                    continue;
                }
                var uri = new Uri(listen);
                var address = System.Net.IPAddress.Parse(uri.Host);
                k.Listen(address, uri.Port, l =>
                {
                    l.Protocols = HttpProtocols.Http2;
                    if (tls is null) DaemonLog.Unauthenticated(log, listen);
                    else l.UseHttps(MutualTls(tls, log));
                });
            }
        });
    }

    /// <summary>
    /// TLS that requires a client certificate and accepts only one the cluster CA issued (chain built against
    /// that CA alone, client authentication usage, in date); the handshake fails for any other caller.
    /// </summary>
    static HttpsConnectionAdapterOptions MutualTls(TlsIdentity tls, ILogger log) => new()
    {
        ServerCertificate = tls.Certificate,
        ClientCertificateMode = ClientCertificateMode.RequireCertificate,
        CheckCertificateRevocation = false,
        ClientCertificateValidation = (cert, _, _) =>
        {
            // The chain Kestrel built used the machine's trust store; ours is the cluster CA only.
            if (ClusterTrust.Validate(cert, tls.Ca, Oids.ClientAuth, out var why) is not null) return true;
            DaemonLog.ClientRefused(log, cert.Subject, why);
            return false;
        },
    };

    /// <summary>
    /// Serves until told to stop (SIGTERM, or SIGINT on a terminal), then stops every hosted service in turn
    /// and returns 0: a stop asked for is a clean exit, so a supervisor or systemd does not count it a failure.
    /// </summary>
    public static async Task<int> RunServerAsync(WebApplication app, IReadOnlyList<string> endpoints, DaemonRun run,
        CancellationToken ct)
    {
        DaemonLogging.Announce(app, run, endpoints);
        if (run.PidFile is { Length: > 0 } pidFile)
            await File.WriteAllTextAsync(pidFile, Environment.ProcessId.ToString(), ct);
        try
        {
            await app.RunAsync(ct);
            return 0;
        }
        catch (OperationCanceledException) when (app.Lifetime.ApplicationStopping.IsCancellationRequested)
        {
            return 0; // told to stop while still starting: a stop all the same
        }
        finally
        {
            foreach (var e in endpoints.Where(e => e.StartsWith("unix:", StringComparison.Ordinal)))
                File.Delete(e["unix:".Length..]);
            if (run.PidFile is { Length: > 0 } own) File.Delete(own);
        }
    }
}
