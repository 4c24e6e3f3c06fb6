using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The CLI by context: `lab up` writes one named after the lab, a context made by hand reaches the same
/// cluster, CAPSULE_CONTEXT and `context use` pick one, and bad input is refused without losing the file.
/// </summary>
[Collection("lab")]
public sealed class ContextTests(LabFixture lab) : IDisposable
{
    // A client config of this test's own for the contexts it makes; the lab's context is in the default one.
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-ctx-").FullName;
    string ConfigFile => Path.Combine(_dir, "config.json");
    Dictionary<string, string> Own => new() { ["CAPSULE_CLIENT_CONFIG"] = ConfigFile };

    Task<Cli.Result> Capsule(IReadOnlyDictionary<string, string>? env, params string[] args) =>
        Cli.Exec(Cli.Binary, args, env: env);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static JsonElement ContextOf(string json, string name) =>
        JsonDocument.Parse(json).RootElement.GetProperty("contexts").EnumerateArray()
            .Single(c => c.GetProperty("name").GetString() == name).Clone();

    [Fact]
    public async Task Lab_up_wrote_a_context_named_after_the_lab_which_context_and_env_pick()
    {
        await lab.Create("ctxa", "h1", "sleep", "infinity");
        try
        {
            var mine = ContextOf((await Capsule(null, "context", "ls", "--json")).Ok().Out, lab.Name);
            Assert.True(mine.GetProperty("lab").GetBoolean());
            var directory = mine.GetProperty("directory").GetString();
            Assert.Equal($"unix:/run/capsule/labs/{lab.Name}/directory.sock", directory);
            Assert.Contains("ctxa", (await Capsule(null, "--context", lab.Name, "ls")).Ok().Out);
            var env = new Dictionary<string, string> { ["CAPSULE_CONTEXT"] = lab.Name };
            Assert.Contains("ctxa", (await Capsule(env, "ls")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "ctxa");
        }
    }

    [Fact]
    public async Task A_context_set_by_hand_and_made_current_reaches_the_cluster_with_no_option()
    {
        await lab.Create("ctxb", "h2", "sleep", "infinity");
        try
        {
            (await Capsule(Own, "context", "set", "mylab", "--directory",
                $"unix:/run/capsule/labs/{lab.Name}/directory.sock",
                "--agent", $"h2=unix:/run/capsule/labs/{lab.Name}/h2.sock")).Ok();
            (await Capsule(Own, "context", "use", "mylab")).Ok();
            var ls = (await Capsule(Own, "ls", "--json")).Ok().Out;
            Assert.Contains("\"ctxb\"", ls);
            // The agent is reached through the --agent endpoint: the one h2 advertises is inside the lab.
            var logs = await Capsule(Own, "logs", "ctxb");
            Assert.True(logs.Code == 0, logs.Err);
            Assert.Contains("mylab", (await Capsule(Own, "context", "ls")).Ok().Out);
            (await Capsule(Own, "context", "rm", "mylab")).Ok();
            var gone = await Capsule(Own, "--context", "mylab", "ls");
            Assert.Equal(1, gone.Code);
            Assert.Contains("no context named 'mylab'", gone.Err);
        }
        finally
        {
            await lab.Run("rm", "ctxb");
        }
    }

    [Fact]
    public async Task Bad_contexts_are_refused_with_what_to_do_and_a_broken_file_is_never_overwritten()
    {
        var bad = await Capsule(Own, "context", "set", "x", "--directory", "10.0.0.1");
        Assert.Equal(1, bad.Code);
        Assert.Contains("etcd:HOST:PORT", bad.Err);
        Assert.False(File.Exists(ConfigFile)); // nothing written for a refused context

        var badAgent = await Capsule(Own, "context", "set", "x", "--directory", "http://10.0.0.1:7472",
            "--agent", "h1");
        Assert.Equal(1, badAgent.Code);
        Assert.Contains("HOST=ENDPOINT", badAgent.Err);

        (await Capsule(Own, "context", "set", "prod", "--directory", "etcd:10.0.0.1:2379,10.0.0.2:2379")).Ok();
        var none = await Capsule(Own, "--context", "nosuch", "ls");
        Assert.Equal(1, none.Code);
        Assert.Contains("prod", none.Err); // it names the contexts there are
        Assert.Equal(1, (await Capsule(Own, "context", "use", "nosuch")).Code);

        const string Broken = "{ \"contexts\": [ {";
        await File.WriteAllTextAsync(ConfigFile, Broken);
        var broken = await Capsule(Own, "context", "set", "y", "--directory", "http://10.0.0.1:7472");
        Assert.Equal(1, broken.Code);
        Assert.Contains(ConfigFile, broken.Err);
        Assert.Equal(Broken, await File.ReadAllTextAsync(ConfigFile));
    }
}
