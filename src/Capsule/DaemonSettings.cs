using System.Diagnostics.CodeAnalysis;
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Capsule.Agent;
using Capsule.Cli;
using Capsule.Dir;
using Capsule.Hosting;

namespace Capsule;

/// <summary>
/// A daemon's command-line options, each tied to the config key it overrides. Only options actually given
/// count: an option left out must not hide what the config file or the environment says.
/// </summary>
internal sealed class KeyedOptions
{
    readonly List<(Option Option, string Key, Func<ParseResult, string?> Read)> _all = [];

    public readonly Option<string?> Config = new("--config")
    {
        Description = "JSON file with the settings (docs/config.md); environment variables and options override it",
    };

    public readonly Option<bool> Check = new("--check")
    {
        Description = "Check the settings, print the effective ones and exit (0: usable, 1: not) without starting",
    };

    public Option<T> Add<T>(Option<T> option, string key)
    {
        _all.Add((option, key, pr => Convert.ToString(pr.GetValue(option), CultureInfo.InvariantCulture)));
        return option;
    }

    public IEnumerable<Option> Options => _all.Select(a => a.Option).Append(Config).Append(Check);

    /// <summary>The options given on this command line, by config key.</summary>
    public Dictionary<string, string?> Given(ParseResult pr) =>
        _all.Where(a => pr.GetResult(a.Option) is { Implicit: false }).ToDictionary(a => a.Key, a => a.Read(pr));

    /// <summary>Loads the settings: the --config file, the environment, then the options given.</summary>
    public LoadedConfig<T> Load<
        [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicProperties
            | DynamicallyAccessedMemberTypes.PublicParameterlessConstructor)] T>(ParseResult pr,
        string environmentPrefix) where T : class, IDaemonConfig, new() =>
        ConfigLoader.Load<T>(pr.GetValue(Config), environmentPrefix, Given(pr));
}

/// <summary>What `--check` prints, and what a daemon says when its settings are unusable.</summary>
internal static class DaemonSettings
{

    /// <summary>
    /// The effective settings as JSON on standard output (the file a daemon would run with), warnings and the
    /// verdict on standard error. 0 when the daemon would start with them, 1 when not.
    /// </summary>
    public static int Check<T>(string what, LoadedConfig<T> loaded) where T : class, IDaemonConfig
    {
        foreach (var w in loaded.Warnings) Output.Error("warning: " + w);
        if (!loaded.Ok)
        {
            Output.Error(Problems(what, loaded));
            return 1;
        }
        Console.Out.WriteLine(JsonSerializer.Serialize(loaded.Settings, typeof(T), DaemonJson.Default));
        Output.Error($"{what} settings are usable (from {loaded.Sources})");
        return 0;
    }

    /// <summary>Every problem, one a line, under a line saying whose settings and from where.</summary>
    public static string Problems<T>(string what, LoadedConfig<T> loaded) where T : class, IDaemonConfig =>
        $"{what} settings are not usable (from {loaded.Sources}):" +
        string.Concat(loaded.Errors.Select(e => "\n  - " + e));

    /// <summary>Settings a daemon can start with, or a <see cref="UserError"/> naming every problem.</summary>
    public static DaemonRun Run<T>(string what, LoadedConfig<T> loaded) where T : class, IDaemonConfig
    {
        if (!loaded.Ok) throw new UserError(Problems(what, loaded));
        var s = loaded.Settings;
        var pidFile = string.IsNullOrEmpty(s.PidFile) ? null : s.PidFile;
        return new DaemonRun(what, pidFile, ConfigRules.ParseLogLevel(s.LogLevel), loaded.Warnings, loaded.Sources);
    }
}
