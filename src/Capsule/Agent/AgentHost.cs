using Capsule.Daemon;
using Capsule.Dir;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent;

/// <summary>capsuled: one per host. Composes the data plane, the capsule runtime and the gRPC API.</summary>
internal static class AgentHost
{
    public static async Task<int> RunAsync(AgentOptions options, DaemonRun run, CancellationToken ct)
    {
        Linux.Native.CloseInheritedOnExec();
        var builder = WebApplication.CreateSlimBuilder();
        string[] endpoints = options.ControlSocket is { } control ? [options.Listen, control] : [options.Listen];
        ConfigureCommon(builder, endpoints, run.Level);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(DirectoryClient.Open(options.Directory));
        builder.Services.AddSingleton<CapsuleRuntime>();
        builder.Services.AddSingleton<DataPlaneHost>();
        builder.Services.AddSingleton(new Checkpoint.Criu(options.Criu, options.StateDir));
        builder.Services.AddSingleton<Faults.FaultInjector>();
        builder.Services.AddSingleton<Migration.MigrationJournal>();
        builder.Services.AddSingleton<Migration.HoldCoordinator>();
        builder.Services.AddSingleton<Migration.SourceRollback>();
        builder.Services.AddSingleton<Migration.MigrationSource>();
        builder.Services.AddSingleton<Migration.MigrationTarget>();
        builder.Services.AddSingleton<Migration.Suspension>();
        builder.Services.AddSingleton<Events.EventLog>();
        builder.Services.AddSingleton<Metrics.AgentMetrics>();
        if (options.Metrics.Length > 0) Metrics.MetricsEndpoint.Listen(builder, options.Metrics);
        builder.Services.AddHostedService(sp => sp.GetRequiredService<DataPlaneHost>());
        builder.Services.AddHostedService<Migration.MigrationRecovery>();
        var app = builder.Build();
        app.MapGrpcService<AgentService>();
        if (options.Metrics.Length > 0) Metrics.MetricsEndpoint.Map(app, options.Metrics);
        // Tests and benchmarks only: never on an agent started without the switch.
        if (Faults.FaultInjector.EnabledByEnvironment) app.MapGrpcService<Faults.FaultService>();
        return await RunServerAsync(app, endpoints, run, ct);
    }

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
