using Capsule.Agent;
using Capsule.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Capsule.Dir;

/// <summary>The embedded directory as its own small daemon (one per lab or small cluster).</summary>
internal static class DirectoryServer
{
    public static async Task<int> RunAsync(string stateDir, Prefix pool, string listen, string? pidFile,
        CancellationToken ct)
    {
        var dir = new EmbeddedDirectory(stateDir, pool); // fails fast on a bad state file, before listening
        var builder = WebApplication.CreateSlimBuilder();
        AgentHost.ConfigureCommon(builder, listen);
        builder.Services.AddSingleton(dir);
        var app = builder.Build();
        app.MapGrpcService<DirectoryService>();
        return await AgentHost.RunServerAsync(app, listen, pidFile, ct);
    }
}
