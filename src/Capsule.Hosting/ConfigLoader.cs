using System.Globalization;
using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.EnvironmentVariables;
using Microsoft.Extensions.Configuration.Json;

namespace Capsule.Hosting;

/// <summary>A daemon's settings type: bound from configuration, then checked as a whole.</summary>
public interface IDaemonConfig
{
    /// <summary>Where the daemon writes its process id while it runs (none when empty).</summary>
    string? PidFile { get; }

    /// <summary>The daemon's certificates (empty: it serves and calls without TLS, and says so).</summary>
    TlsConfig Tls { get; }

    /// <summary>The least severe log level written (Trace, Debug, Information, Warning, Error, Critical).</summary>
    string LogLevel { get; }

    /// <summary>Fills in defaults that follow from other keys (the agent's Listen from its Underlay).</summary>
    void Complete();

    /// <summary>
    /// Adds what makes these settings unusable to <paramref name="errors"/>, doubts to <paramref name="warnings"/>.
    /// </summary>
    void Validate(List<string> errors, List<string> warnings);
}

/// <summary>
/// What loading a daemon's settings gave: the settings (unusable when <see cref="Errors"/> has any), what
/// an operator should look at, and where the settings came from.
/// </summary>
public sealed record LoadedConfig<T>(T Settings, IReadOnlyList<string> Errors, IReadOnlyList<string> Warnings,
    string Sources) where T : class, IDaemonConfig
{
    public bool Ok => Errors.Count == 0;
}

/// <summary>
/// Reads a daemon's settings with Microsoft.Extensions.Configuration: the JSON file, then environment
/// variables (the prefix, then the key: CAPSULE_AGENT__HOST), then the command line's options, each
/// overriding the one before. Every problem is collected, so one run of `--check` names them all.
/// </summary>
public static class ConfigLoader
{
    public static LoadedConfig<T> Load<
        [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicProperties
            | DynamicallyAccessedMemberTypes.PublicParameterlessConstructor)] T>(string? file, string environmentPrefix,
        IReadOnlyDictionary<string, string?> commandLine) where T : class, IDaemonConfig, new()
    {
        var errors = new List<string>();
        var warnings = new List<string>();
        var settings = new T();
        var sources = Sources(file, environmentPrefix, commandLine);
        var builder = new ConfigurationBuilder();
        if (file is not null)
        {
            if (FileProblem(file) is { } problem)
                return new(settings, [problem], warnings, sources);
            builder.AddJsonFile(Path.GetFullPath(file), optional: false, reloadOnChange: false);
        }
        builder.AddEnvironmentVariables(environmentPrefix);
        builder.AddInMemoryCollection(commandLine);
        IConfigurationRoot root;
        try
        {
            root = builder.Build();
        }
        catch (Exception e) when (e is InvalidDataException or FormatException)
        {
            // The JSON provider wraps the parser's own message (with its line and position) in two layers.
            var why = e.InnerException?.InnerException?.Message ?? e.InnerException?.Message ?? e.Message;
            return new(settings, [$"config file {file} is not a valid JSON object: {why}"], warnings, sources);
        }
        var known = Keys<T>();
        WarnUnknown(root, known, environmentPrefix, warnings);
        foreach (var p in known) Bind(root.GetSection(p.Name), p, settings, errors);
        settings.Complete();
        settings.Validate(errors, warnings);
        return new(settings, errors, warnings, sources);
    }

    /// <summary>The settable public properties of <typeparamref name="T"/>: its keys.</summary>
    public static IReadOnlyList<PropertyInfo> Keys<
        [DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicProperties)] T>() =>
        [.. typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite)];

    static string? FileProblem(string file)
    {
        if (Directory.Exists(file)) return $"config file {file} is a folder; give the path of a JSON file";
        if (!File.Exists(file)) return $"config file {file} does not exist";
        try
        {
            using var _ = File.OpenRead(file);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot read config file {file}: {e.Message}";
        }
    }

    /// <summary>
    /// One key at a time, so that every value of the wrong kind is named, not only the first. An empty value
    /// (JSON null, or "") leaves the default in place.
    /// </summary>
    static void Bind(IConfigurationSection section, PropertyInfo p, object settings, List<string> errors)
    {
        if (p.PropertyType == typeof(TlsConfig))
        {
            BindTls(section, (TlsConfig)p.GetValue(settings)!, errors);
            return;
        }
        if (section.Value is null)
        {
            if (section.GetChildren().Any())
                errors.Add($"{p.Name}: expected {Expected(p.PropertyType)}, not an object or a list");
            return;
        }
        if (section.Value.Length == 0 && p.PropertyType != typeof(string)) return;
        try
        {
            p.SetValue(settings, Convert(section.Value, p.PropertyType));
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            errors.Add($"{p.Name}: '{section.Value}' is not {Expected(p.PropertyType)}");
        }
    }

    /// <summary>The one section of keys: "Tls": { "Ca", "Cert", "Key" }, file paths all.</summary>
    static void BindTls(IConfigurationSection section, TlsConfig tls, List<string> errors)
    {
        if (section.Value is { Length: > 0 })
        {
            errors.Add("Tls: expected an object { \"Ca\": ..., \"Cert\": ..., \"Key\": ... }, not a string");
            return;
        }
        foreach (var child in section.GetChildren())
        {
            if (child.Key.Equals("Ca", StringComparison.OrdinalIgnoreCase)) tls.Ca = child.Value;
            else if (child.Key.Equals("Cert", StringComparison.OrdinalIgnoreCase)) tls.Cert = child.Value;
            else if (child.Key.Equals("Key", StringComparison.OrdinalIgnoreCase)) tls.Key = child.Value;
            else errors.Add($"Tls.{child.Key}: no such key; the Tls section has Ca, Cert and Key");
        }
    }

    /// <summary>
    /// A value as the key's type: the settings types hold only strings and numbers. By hand rather than
    /// with the configuration binder, which needs reflection the native binary does not have.
    /// </summary>
    static object Convert(string value, Type t)
    {
        var u = Nullable.GetUnderlyingType(t) ?? t;
        if (u == typeof(string)) return value;
        if (u == typeof(int)) return int.Parse(value, NumberStyles.Integer, CultureInfo.InvariantCulture);
        if (u == typeof(long)) return long.Parse(value, NumberStyles.Integer, CultureInfo.InvariantCulture);
        if (u == typeof(double)) return double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture);
        if (u == typeof(bool)) return bool.Parse(value);
        throw new FormatException($"a key of type {u.Name} is not supported");
    }

    static string Expected(Type t) =>
        t == typeof(int) || t == typeof(long) ? "a whole number"
        : t == typeof(double) ? "a number"
        : t == typeof(bool) ? "true or false"
        : "a string";

    /// <summary>
    /// A key no setting has is ignored, but said: it is most often a typo of one that then keeps its default.
    /// </summary>
    static void WarnUnknown(IConfigurationRoot root, IReadOnlyList<PropertyInfo> known, string environmentPrefix,
        List<string> warnings)
    {
        var names = known.Select(p => p.Name).ToList();
        foreach (var provider in root.Providers)
        {
            foreach (var key in provider.GetChildKeys([], null).Distinct(StringComparer.OrdinalIgnoreCase))
            {
                if (names.Contains(key, StringComparer.OrdinalIgnoreCase)) continue;
                var where = provider switch
                {
                    JsonConfigurationProvider j => $"in {FullPath(j)}",
                    EnvironmentVariablesConfigurationProvider => $"from environment variable {environmentPrefix}{key}",
                    _ => "on the command line",
                };
                var guess = names.MinBy(n => Distance(n.ToLowerInvariant(), key.ToLowerInvariant()));
                var hint = guess is not null && Distance(guess.ToLowerInvariant(), key.ToLowerInvariant()) <= 3
                    ? $"; did you mean '{guess}'?"
                    : $"; known keys: {string.Join(", ", names)}";
                warnings.Add($"unknown key '{key}' {where} is ignored{hint}");
            }
        }
    }

    /// <summary>The file's full path (the provider itself holds it relative to its folder).</summary>
    static string? FullPath(JsonConfigurationProvider j) =>
        j.Source.FileProvider?.GetFileInfo(j.Source.Path ?? "").PhysicalPath ?? j.Source.Path;

    /// <summary>Edit distance, for the "did you mean" of an unknown key.</summary>
    static int Distance(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (var i = 1; i <= a.Length; i++)
        {
            var diagonal = row[0];
            row[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var above = row[j];
                var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + cost);
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    static string Sources(string? file, string environmentPrefix, IReadOnlyDictionary<string, string?> commandLine)
    {
        var from = new List<string>();
        if (file is not null) from.Add(Path.GetFullPath(file));
        var env = Environment.GetEnvironmentVariables().Keys.Cast<string>()
            .Count(k => k.StartsWith(environmentPrefix, StringComparison.OrdinalIgnoreCase));
        if (env > 0) from.Add($"{env} environment variable{(env == 1 ? "" : "s")} {environmentPrefix}*");
        if (commandLine.Count > 0) from.Add($"command-line options ({string.Join(", ", commandLine.Keys)})");
        return from.Count == 0 ? "defaults only" : string.Join(", then ", from);
    }
}
