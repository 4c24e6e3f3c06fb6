using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Prometheus;

namespace Capsule.Agent.Metrics;

/// <summary>
/// `--metrics http://addr:port`: /metrics on a Kestrel endpoint of its own beside the gRPC one.
/// HTTP/1.1, which is what Prometheus and curl speak (the gRPC endpoint speaks HTTP/2 alone); and
/// that endpoint serves the metrics and nothing else, so the agent's API is not reachable through it.
/// </summary>
internal static partial class MetricsEndpoint
{
    /// <summary>The address and port of a --metrics value; an error for people when it is not one.</summary>
    public static (IPAddress Address, int Port) Parse(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != "http" || uri.AbsolutePath != "/"
            || !IPAddress.TryParse(uri.Host, out var address))
            throw new ArgumentException($"--metrics must be http://ADDRESS:PORT (got '{url}')");
        return (address, uri.Port);
    }

    public static void Listen(WebApplicationBuilder builder, string url)
    {
        var (address, port) = Parse(url);
        builder.WebHost.ConfigureKestrel(k => k.Listen(address, port, l => l.Protocols = HttpProtocols.Http1));
    }

    /// <summary>
    /// Branches off every request that arrived on the metrics port before endpoint routing runs:
    /// /metrics is answered there, anything else is not found.
    /// </summary>
    public static void Map(WebApplication app, string url)
    {
        var (_, port) = Parse(url);
        var registry = app.Services.GetRequiredService<AgentMetrics>().Registry;
        app.MapWhen(ctx => ctx.Connection.LocalPort == port, b => b.UseMetricServer("/metrics", registry));
        LogServing(app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(MetricsEndpoint)),
            url.TrimEnd('/') + "/metrics");
    }

    [LoggerMessage(EventId = 900, Level = LogLevel.Information, Message = "metrics at {Url}")]
    static partial void LogServing(ILogger logger, string url);
}
