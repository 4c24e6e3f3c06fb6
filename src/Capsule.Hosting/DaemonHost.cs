using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Hosting;

/// <summary>What both daemons (the agent and the directory) serve gRPC with: Kestrel, logging, a clean stop.</summary>
public static class DaemonHost
{
    /// <summary>
    /// Logging and Kestrel endpoints (unix sockets or http://addr:port) speaking HTTP/2 for gRPC.
    /// </summary>
    public static void ConfigureCommon(WebApplicationBuilder builder, IReadOnlyList<string> endpoints, LogLevel level)
    {
        DaemonLogging.Configure(builder, level);
        builder.Services.AddGrpc();
        builder.WebHost.ConfigureKestrel(k =>
        {
            foreach (var listen in endpoints)
            {
                if (listen.StartsWith("unix:", StringComparison.Ordinal))
                {
                    var path = listen["unix:".Length..];
                    if (File.Exists(path)) File.Delete(path); // stale socket from a crash
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    k.ListenUnixSocket(path, l => l.Protocols = HttpProtocols.Http2);
                }
                else
                {
                    var uri = new Uri(listen);
                    var address = System.Net.IPAddress.Parse(uri.Host);
                    k.Listen(address, uri.Port, l => l.Protocols = HttpProtocols.Http2);
                }
            }
        });
    }

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
