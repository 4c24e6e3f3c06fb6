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
    public static async Task<int> RunAsync(AgentOptions options, string? pidFile, CancellationToken ct)
    {
        Linux.Native.CloseInheritedOnExec();
        var builder = WebApplication.CreateSlimBuilder();
        ConfigureCommon(builder, options.Listen);
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
        return await RunServerAsync(app, options.Listen, pidFile, ct);
    }

    /// <summary>Logging and a Kestrel endpoint (a unix socket or http://addr:port) speaking HTTP/2 for gRPC.</summary>
    public static void ConfigureCommon(WebApplicationBuilder builder, string listen)
    {
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        });
        builder.Logging.SetMinimumLevel(LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Services.AddGrpc();
        builder.WebHost.ConfigureKestrel(k =>
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
                k.Listen(System.Net.IPAddress.Parse(uri.Host), uri.Port, l => l.Protocols = HttpProtocols.Http2);
            }
        });
    }

    public static async Task<int> RunServerAsync(WebApplication app, string listen, string? pidFile,
        CancellationToken ct)
    {
        if (pidFile is not null) await File.WriteAllTextAsync(pidFile, Environment.ProcessId.ToString(), ct);
        try
        {
            await app.RunAsync(ct);
            return 0;
        }
        finally
        {
            if (listen.StartsWith("unix:", StringComparison.Ordinal)) File.Delete(listen["unix:".Length..]);
            if (pidFile is not null) File.Delete(pidFile);
        }
    }
}
