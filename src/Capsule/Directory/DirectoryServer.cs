using Capsule.Agent;
using Capsule.Core;
using Capsule.Daemon;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Capsule.Dir;

/// <summary>The embedded directory as its own small daemon (one per lab or small cluster).</summary>
internal static class DirectoryServer
{
    public static async Task<int> RunAsync(DirectoryConfig config, DaemonRun run, CancellationToken ct)
    {
        // Fails fast on a bad state file, before listening.
        var dir = new EmbeddedDirectory(config.State, Prefix.Parse(config.Pool));
        var builder = WebApplication.CreateSlimBuilder();
        AgentHost.ConfigureCommon(builder, config.Endpoints(), run.Level);
        builder.Services.AddSingleton(dir);
        var app = builder.Build();
        app.MapGrpcService<DirectoryService>();
        return await AgentHost.RunServerAsync(app, config.Endpoints(), run, ct);
    }
}
