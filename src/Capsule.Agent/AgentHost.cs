using Capsule.Hosting;
using Capsule.Dir;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent;

/// <summary>capsuled: one per host. Composes the data plane, the capsule runtime and the gRPC API.</summary>
public static class AgentHost
{
    public static async Task<int> RunAsync(AgentOptions options, DaemonRun run, CancellationToken ct)
    {
        Linux.Native.CloseInheritedOnExec();
        var builder = WebApplication.CreateSlimBuilder();
        string[] endpoints = options.ControlSocket is { } control ? [options.Listen, control] : [options.Listen];
        // One identity for the whole process: served to callers, and shown when calling agents, the directory, etcd.
        var tls = options.Tls?.Load();
        if (tls is not null) Rpc.Channels.UseIdentity(tls);
        DaemonHost.ConfigureCommon(builder, endpoints, run.Level, tls);
        builder.Services.AddSingleton(options);
        builder.Services.AddSingleton(AgentAccess.Rules);
        builder.Services.AddSingleton<PeerCallChecks>();
        // Made by the container, so it is also disposed by it when the agent stops cleanly: an etcd
        // directory then revokes the host's liveness lease (a crash leaves it to lapse instead).
        builder.Services.AddSingleton(_ => DirectoryClient.Open(options.Directory));
        builder.Services.AddSingleton<CapsuleRuntime>();
        builder.Services.AddSingleton<DataPlaneHost>();
        builder.Services.AddSingleton(new Checkpoint.Criu(options.Criu, options.StateDir));
        builder.Services.AddSingleton<Faults.FaultInjector>();
        builder.Services.AddSingleton<Migration.MigrationJournal>();
        builder.Services.AddSingleton<Migration.HoldCoordinator>();
        builder.Services.AddSingleton<Migration.SourceRollback>();
        builder.Services.AddSingleton<Migration.MigrationSource>();
        builder.Services.AddSingleton<Migration.MigrationRunner>();
        builder.Services.AddSingleton<Drain.HostLoads>();
        builder.Services.AddSingleton<Drain.Drainer>();
        builder.Services.AddSingleton<Migration.MigrationTarget>();
        builder.Services.AddSingleton<Migration.Suspension>();
        builder.Services.AddSingleton<Events.EventLog>();
        builder.Services.AddSingleton<Metrics.AgentMetrics>();
        if (options.Metrics.Length > 0) Metrics.MetricsEndpoint.Listen(builder, options.Metrics);
        builder.Services.AddHostedService(sp => sp.GetRequiredService<DataPlaneHost>());
        builder.Services.AddSingleton<DataPlane.KeyExchange>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<DataPlane.KeyExchange>());
        builder.Services.AddHostedService<Migration.MigrationRecovery>();
        builder.Services.AddSingleton<Dns.CapsuleDnsServer>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<Dns.CapsuleDnsServer>());
        var app = builder.Build();
        app.MapGrpcService<AgentService>();
        if (options.Metrics.Length > 0) Metrics.MetricsEndpoint.Map(app, options.Metrics);
        // Tests and benchmarks only: never on an agent started without the switch.
        if (Faults.FaultInjector.EnabledByEnvironment) app.MapGrpcService<Faults.FaultService>();
        return await DaemonHost.RunServerAsync(app, endpoints, run, ct);
    }
}
