using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// An agent told to stop (SIGTERM, as systemd's `systemctl stop` or `restart` sends with KillMode=process)
/// exits cleanly and leaves its capsules running; the next agent takes them back, and they are reachable
/// from other hosts again.
/// </summary>
[Collection("lab")]
public sealed class AgentStopTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    LabPaths Paths => new(lab.Name);

    async Task<string?> StateOf(string capsule)
    {
        var r = await lab.Run("ls", "--json");
        if (r.Code != 0) return null;
        using var doc = JsonDocument.Parse(r.Out);
        return doc.RootElement.EnumerateArray().Where(c => c.GetProperty("name").GetString() == capsule)
            .Select(c => $"{c.GetProperty("host").GetString()} {c.GetProperty("state").GetString()}")
            .SingleOrDefault();
    }

    [Fact]
    public async Task A_SIGTERMed_agent_exits_0_its_capsule_lives_on_and_the_next_agent_serves_it_again()
    {
        var (srv, srvPid) = await lab.Create("tsrv", "h2", Stream("server", "7300"));
        await lab.WaitForLog("tsrv", "LISTENING");
        await lab.Create("tcli", "h1", Stream("client", srv, "7300", "15"));
        try
        {
            await lab.WaitForLog("tcli", "PROGRESS sent=");
            var pidFile = Paths.AgentPidFile("h2");
            var log = Paths.AgentLog("h2");
            var old = FaultLab.AgentPid(lab, "h2");
            (await Cli.Exec("kill", ["-TERM", old.ToString()])).Ok();

            // The old agent goes by itself, with exit code 0; the capsule's server outlives it.
            await LabFixture.Until(() => Task.FromResult(!FaultLab.Alive(old)), $"agent {old} to exit", 30);
            Assert.True(FaultLab.Alive(srvPid), "the capsule's server died with its agent");
            await LabFixture.Until(async () => (await File.ReadAllTextAsync(log))
                .Contains("supervisor: agent exited (exit code 0); restarting in 1 s"), "the supervisor's note", 30);
            var text = await File.ReadAllTextAsync(log);
            Assert.Contains("agent stopping (told to)", text);
            var stop = text[text.LastIndexOf("agent stopping (told to)", StringComparison.Ordinal)..];
            Assert.Contains("data plane down; 1 capsules keep running", stop);
            // A stop asked for is no failure: nothing on the way out is logged as one.
            Assert.DoesNotContain(" fail: ", stop);
            Assert.DoesNotContain(" crit: ", stop);

            // The supervisor starts the next agent, which re-adopts the capsule.
            await LabFixture.Until(
                () => Task.FromResult(FaultLab.ReadPid(pidFile) is { } p && p != old && FaultLab.Alive(p)),
                "a new agent on h2", 30);
            await LabFixture.Until(async () => (await lab.InCapsule("tsrv", "true")).Code == 0,
                "the new agent to serve tsrv", 30);
            Assert.True(FaultLab.Alive(srvPid), "the capsule's server died across the restart");
            Assert.Equal("h2 running", await StateOf("tsrv"));
            Assert.Contains($"recovered capsule tsrv", await File.ReadAllTextAsync(log));

            // Reachable from another host: a new connection from h3, and the stream from h1 carried on.
            await lab.Create("tprobe", "h3", "sleep", "infinity");
            await lab.WaitForPort("tprobe", srv, 7300);
            var client = await lab.WaitForLog("tcli", "DONE", seconds: 90);
            Assert.DoesNotContain("ERROR", client);
            Assert.DoesNotContain("ERROR", await lab.Logs("tsrv"));
        }
        finally
        {
            await lab.Run("rm", "tprobe");
            await lab.Run("rm", "tcli");
            await lab.Run("rm", "tsrv");
        }
    }
}
