using Capsule.Agent;
using Capsule.Core;
using Capsule.Hosting;
using Capsule.Dir;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The daemons' settings: bound from a JSON file, the environment and options in that order, checked with
/// messages that name the key and what to write. No lab: these run in-process on temporary files.
/// </summary>
public sealed class ConfigTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-config-").FullName;
    // A prefix of this test's own: environment variables are process-wide and tests run in parallel.
    readonly string _env = $"CAPSULE_TEST_{Guid.NewGuid():N}__";
    readonly List<string> _set = [];

    public void Dispose()
    {
        foreach (var name in _set) Environment.SetEnvironmentVariable(name, null);
        Directory.Delete(_dir, recursive: true);
    }

    string File(string json)
    {
        var path = Path.Combine(_dir, $"{Guid.NewGuid():N}.json");
        System.IO.File.WriteAllText(path, json);
        return path;
    }

    void Env(string key, string value)
    {
        _set.Add(_env + key);
        Environment.SetEnvironmentVariable(_env + key, value);
    }

    LoadedConfig<T> Load<T>(string? file, params (string Key, string Value)[] options)
        where T : class, IDaemonConfig, new() =>
        ConfigLoader.Load<T>(file, _env, options.ToDictionary(o => o.Key, o => (string?)o.Value));

    const string Minimal = """{ "Host": "h1", "Underlay": "10.0.0.5", "Directory": "http://10.0.0.1:7472" }""";

    [Fact]
    public void Every_agent_key_is_bound_from_the_file()
    {
        var loaded = Load<AgentConfig>(File("""
            {
              // comments are allowed, as are keys in any case
              "host": "node-7", "Underlay": "10.1.2.3", "Port": 9000, "UnderlayMtu": 9000,
              "Directory": "unix:/run/d.sock", "Listen": "http://10.1.2.3:8000",
              "ControlSocket": "unix:/run/a.sock", "State": "/srv/state", "NetnsPrefix": "cx",
              "Criu": "/bin/true", "Serves": "198.51.100.0/24, 203.0.113.0/24", "IcmpFrom": "198.51.100.1",
              "HoldLeaseSeconds": 2.5, "HoldSpool": "/dev/shm/x", "Tun": "tun9", "PidFile": "/run/a.pid",
              "LogLevel": "debug", "DataPlane": "authenticate", "KeyRotationSeconds": 30, "Lanes": 3
            }
            """));
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        Assert.Empty(loaded.Warnings);
        var o = loaded.Settings.ToOptions();
        Assert.Equal(("node-7", "10.1.2.3", 9000, 9000), (o.Host, o.Underlay.ToString(), o.Port, o.UnderlayMtu));
        Assert.Equal(("unix:/run/d.sock", "http://10.1.2.3:8000", "unix:/run/a.sock"),
            (o.Directory, o.Listen, o.ControlSocket));
        Assert.Equal(("/srv/state", "cx", "/bin/true", "tun9"), (o.StateDir, o.NetnsPrefix, o.Criu, o.Tun));
        Assert.Equal(("198.51.100.0/24, 203.0.113.0/24", "198.51.100.1"), (o.Serves, o.IcmpFrom));
        Assert.Equal((TimeSpan.FromSeconds(2.5), "/dev/shm/x"), (o.HoldLease, o.HoldSpool));
        Assert.Equal("/run/a.pid", loaded.Settings.PidFile);
        Assert.Equal((Wire.Mode.AuthenticateOnly, TimeSpan.FromSeconds(30)), (o.DataPlaneMode, o.KeyRotation));
        Assert.Equal(3, o.Lanes);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Debug, ConfigRules.ParseLogLevel(loaded.Settings.LogLevel));
    }

    [Fact]
    public void Three_keys_make_an_agent_the_rest_has_defaults()
    {
        var loaded = Load<AgentConfig>(File(Minimal));
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        var o = loaded.Settings.ToOptions();
        Assert.Equal("http://10.0.0.5:7471", o.Listen); // the API on the underlay address
        Assert.Equal((7470, 1500, "/var/lib/capsule/agent", "capsule"), (o.Port, o.UnderlayMtu, o.StateDir,
            o.NetnsPrefix));
        Assert.Equal((TimeSpan.FromSeconds(15), AgentOptions.DefaultHoldSpool, "cap0", (string?)null),
            (o.HoldLease, o.HoldSpool, o.Tun, o.ControlSocket));
        Assert.Equal(Math.Clamp(Environment.ProcessorCount, 1, 64), o.Lanes); // a lane per core
    }

    [Fact]
    public void The_environment_overrides_the_file_and_options_override_both()
    {
        var file = File(Minimal.Replace("{", """{ "Port": 1000, "UnderlayMtu": 1400, "State": "/a", """));
        Env("PORT", "2000");
        Env("STATE", "/b");
        var loaded = Load<AgentConfig>(file, ("State", "/c"));
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        Assert.Equal((2000, 1400, "/c"), (loaded.Settings.Port, loaded.Settings.UnderlayMtu, loaded.Settings.State));
        Assert.Contains($"2 environment variables {_env}*", loaded.Sources);
        Assert.Contains("command-line options (State)", loaded.Sources);
    }

    [Fact]
    public void Options_alone_still_make_an_agent_as_before_config_files()
    {
        var loaded = Load<AgentConfig>(null, ("Host", "h2"), ("Underlay", "198.18.0.2"),
            ("Directory", "unix:/run/capsule/labs/x/directory.sock"), ("Listen", "unix:/run/capsule/labs/x/h2.sock"),
            ("State", "/run/capsule/labs/x/hostview"), ("HoldLeaseSeconds", "30"));
        Assert.True(loaded.Ok, string.Join("\n", loaded.Errors));
        Assert.Equal(TimeSpan.FromSeconds(30), loaded.Settings.ToOptions().HoldLease);
        Assert.Contains(loaded.Warnings, w => w.StartsWith("Listen is a unix socket", StringComparison.Ordinal));
    }

    [Fact]
    public void Every_problem_is_named_with_its_key_and_what_to_write()
    {
        var loaded = Load<AgentConfig>(File("""
            { "Hots": "h1", "Underlay": "10.0.0.300", "Port": "many", "UnderlayMtu": 100,
              "Directory": "directory.example:7472", "State": "var/lib/capsule", "HoldLeaseSeconds": 0,
              "Serves": "198.51.100.0/33", "LogLevel": "Loud", "DataPlane": "off", "KeyRotationSeconds": 0,
              "Lanes": 65 }
            """));
        Assert.False(loaded.Ok);
        string[] expected =
        [
            "Host is missing: write this host's name",
            "Underlay: '10.0.0.300' is not an IPv4 address of this host; write one such as 10.0.0.5",
            "Port: 'many' is not a whole number",
            "UnderlayMtu: 100 must be between 576 and 65535",
            "Directory: 'directory.example:7472' is not an endpoint; write unix:/path/to.sock or http://HOST:PORT",
            "State: 'var/lib/capsule' is a relative path; write an absolute one",
            "HoldLeaseSeconds: 0 must be more than 0",
            "Serves: '198.51.100.0/33' is not an IPv4 prefix",
            "LogLevel: 'Loud' is not a log level; write one of Trace, Debug, Information",
            "DataPlane: 'off' is not a mode; write \"encrypt\" (default) or \"authenticate\"",
            "KeyRotationSeconds: 0 must be 1-86400",
            "Lanes: 65 must be between 1 and 64, or 0 for one per core",
        ];
        foreach (var e in expected)
            Assert.Contains(loaded.Errors, x => x.StartsWith(e, StringComparison.Ordinal));
        Assert.Equal(expected.Length, loaded.Errors.Count);
        var unknown = Assert.Single(loaded.Warnings, w => w.StartsWith("unknown key", StringComparison.Ordinal));
        Assert.Contains("'Hots'", unknown);
        Assert.Contains("did you mean 'Host'?", unknown);
    }

    [Fact]
    public void An_advertised_listen_on_every_address_is_refused()
    {
        var loaded = Load<AgentConfig>(File(Minimal), ("Listen", "http://0.0.0.0:7471"));
        var e = Assert.Single(loaded.Errors);
        Assert.StartsWith("Listen: 'http://0.0.0.0:7471' is advertised to the other hosts", e);
    }

    [Fact]
    public void An_unknown_environment_variable_is_warned_about_by_its_full_name()
    {
        Env("HOLDLEASESECOND", "30");
        var loaded = Load<AgentConfig>(File(Minimal));
        Assert.True(loaded.Ok);
        Assert.Equal($"unknown key 'HOLDLEASESECOND' from environment variable {_env}HOLDLEASESECOND is ignored; " +
            "did you mean 'HoldLeaseSeconds'?", Assert.Single(loaded.Warnings));
        Assert.Equal(15, loaded.Settings.HoldLeaseSeconds);
    }

    [Fact]
    public void A_missing_unreadable_or_broken_file_says_so()
    {
        var missing = Load<AgentConfig>(Path.Combine(_dir, "nope.json"));
        Assert.Equal($"config file {Path.Combine(_dir, "nope.json")} does not exist", Assert.Single(missing.Errors));
        var folder = Load<AgentConfig>(_dir);
        Assert.Contains("is a folder", Assert.Single(folder.Errors));
        var broken = Load<AgentConfig>(File("""{ "Host": "h1", """ + "\n" + """ "Underlay" "10.0.0.5" }"""));
        var e = Assert.Single(broken.Errors);
        Assert.StartsWith("config file ", e);
        Assert.Contains("is not a valid JSON object", e);
        Assert.Contains("LineNumber: 1", e); // the parser's own pointer to the spot, zero-based
        var list = Load<AgentConfig>(File("[1, 2]"));
        Assert.Contains("is not a valid JSON object", Assert.Single(list.Errors));
        var nested = Load<AgentConfig>(File("""{ "Host": { "Name": "h1" }, "Underlay": "10.0.0.5" }"""));
        Assert.Contains(nested.Errors, x => x == "Host: expected a string, not an object or a list");
    }

    [Fact]
    public void The_directory_needs_where_to_listen_and_a_pool()
    {
        var loaded = Load<DirectoryConfig>(File("""{ "Pool": "100.64.0.1/16", "ControlSocket": "/run/d.sock" }"""));
        Assert.Contains(loaded.Errors, e => e.StartsWith("Listen is missing: write where to serve",
            StringComparison.Ordinal));
        Assert.Contains(loaded.Errors, e => e.StartsWith("Pool: '100.64.0.1/16' is not an IPv4 prefix",
            StringComparison.Ordinal));
        Assert.Contains(loaded.Errors, e => e.StartsWith("ControlSocket: '/run/d.sock' is not a unix socket",
            StringComparison.Ordinal));
        var ok = Load<DirectoryConfig>(File("""{ "Listen": "http://0.0.0.0:7472" }"""));
        Assert.True(ok.Ok, string.Join("\n", ok.Errors));
        Assert.Equal(("/var/lib/capsule/directory", "100.64.0.0/16"), (ok.Settings.State, ok.Settings.Pool));
        Assert.Equal(["http://0.0.0.0:7472"], ok.Settings.Endpoints());
    }

    /// <summary>The shipped examples load as they are, and the docs name every key of both daemons.</summary>
    [Fact]
    public void The_example_files_are_usable_and_the_docs_name_every_key()
    {
        var root = AppContext.BaseDirectory;
        while (!System.IO.File.Exists(Path.Combine(root, "Capsule.slnx"))) root = Path.GetDirectoryName(root)!;
        var agent = Load<AgentConfig>(Path.Combine(root, "deploy", "agent.json"));
        Assert.True(agent.Ok, string.Join("\n", agent.Errors));
        Assert.DoesNotContain(agent.Warnings, w => w.StartsWith("unknown key", StringComparison.Ordinal));
        var directory = Load<DirectoryConfig>(Path.Combine(root, "deploy", "directory.json"));
        Assert.True(directory.Ok, string.Join("\n", directory.Errors));
        Assert.Empty(directory.Warnings);
        var docs = System.IO.File.ReadAllText(Path.Combine(root, "docs", "config.md"));
        foreach (var key in ConfigLoader.Keys<AgentConfig>().Concat(ConfigLoader.Keys<DirectoryConfig>()))
            Assert.Contains($"| `{key.Name}` |", docs);
        foreach (var key in ConfigLoader.Keys<AgentConfig>())
            Assert.Contains($"\"{key.Name}\":", System.IO.File.ReadAllText(Path.Combine(root, "deploy", "agent.json")));
    }
}
