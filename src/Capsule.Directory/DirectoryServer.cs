using Capsule.Core;
using Capsule.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Capsule.Dir;

/// <summary>The embedded directory as its own small daemon (one per lab or small cluster).</summary>
public static class DirectoryServer
{
    public static async Task<int> RunAsync(DirectoryConfig config, DaemonRun run, CancellationToken ct)
    {
        // Fails fast on a bad state file, before listening.
        var dir = new EmbeddedDirectory(config.State, Prefix.Parse(config.Pool));
        var builder = WebApplication.CreateSlimBuilder();
        var tls = config.Tls.IsEmpty ? null : config.Tls.Load();
        if (tls is not null) Rpc.Channels.UseIdentity(tls);
        DaemonHost.ConfigureCommon(builder, config.Endpoints(), run.Level, tls);
        builder.Services.AddSingleton(dir);
        builder.Services.AddSingleton(DirectoryAccess.Rules);
        var app = builder.Build();
        app.MapGrpcService<DirectoryService>();
        return await DaemonHost.RunServerAsync(app, config.Endpoints(), run, ct);
    }
}
