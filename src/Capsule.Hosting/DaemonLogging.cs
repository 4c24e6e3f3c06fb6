using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace Capsule.Hosting;

/// <summary>What a daemon's run needs beside its own options, from its checked settings.</summary>
/// <param name="What">"agent" or "directory", for the log.</param>
/// <param name="Sources">Where the settings came from (file, environment, command line).</param>
public sealed record DaemonRun(string What, string? PidFile, LogLevel Level, IReadOnlyList<string> Warnings,
    string Sources);

/// <summary>
/// Logging and service-manager integration shared by the daemons. The log goes to standard output, one line
/// per message, for the journal (under systemd) or the lab's log file: under systemd in the journal's own
/// format (a syslog priority prefix per line, no timestamp: journald stamps lines itself), elsewhere with a
/// timestamp, and coloured only on a terminal.
/// </summary>
public static partial class DaemonLogging
{
    public static void Configure(WebApplicationBuilder builder, LogLevel level)
    {
        // Under systemd: SIGTERM handled by the systemd lifetime, READY=1 once every hosted service has started
        // and Kestrel listens (so `systemctl start` returns when the agent serves), STOPPING=1 on the way out.
        // Anywhere else it adds nothing.
        builder.Services.AddSystemd();
        builder.Logging.ClearProviders();
        if (SystemdHelpers.IsSystemdService())
            builder.Logging.AddSystemdConsole(o => o.IncludeScopes = false);
        else
            builder.Logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
                o.ColorBehavior = Console.IsOutputRedirected ? LoggerColorBehavior.Disabled
                    : LoggerColorBehavior.Enabled;
            });
        builder.Logging.SetMinimumLevel(level);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        // Its "Application started. Press Ctrl+C" lines: the daemon says when it is ready and stopping itself.
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Warning);
    }

    /// <summary>Logs the settings' origin and doubts now, and when the daemon is ready and stopping.</summary>
    public static void Announce(WebApplication app, DaemonRun run, IReadOnlyList<string> endpoints)
    {
        var log = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("Capsule.Daemon");
        LogStarting(log, run.What, Environment.ProcessId, run.Sources);
        foreach (var w in run.Warnings) LogConfigWarning(log, w);
        var served = string.Join(", ", endpoints);
        app.Lifetime.ApplicationStarted.Register(() => LogReady(log, run.What, served));
        app.Lifetime.ApplicationStopping.Register(() => LogStopping(log, run.What));
        app.Lifetime.ApplicationStopped.Register(() => LogStopped(log, run.What));
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Information,
        Message = "{What} starting, pid {Pid}; settings: {Sources}")]
    static partial void LogStarting(ILogger logger, string what, int pid, string sources);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "config: {Warning}")]
    static partial void LogConfigWarning(ILogger logger, string warning);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "{What} ready, serving {Endpoints}")]
    static partial void LogReady(ILogger logger, string what, string endpoints);

    [LoggerMessage(EventId = 103, Level = LogLevel.Information, Message = "{What} stopping (told to)")]
    static partial void LogStopping(ILogger logger, string what);

    [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "{What} stopped")]
    static partial void LogStopped(ILogger logger, string what);
}
