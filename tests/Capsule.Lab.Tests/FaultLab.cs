using System.Runtime.CompilerServices;
using Capsule.FaultProtos;
using Capsule.Lab;
using Capsule.Rpc;

namespace Capsule.Lab.Tests;

/// <summary>
/// Fault injection for lab tests: every lab these tests start serves the agents' Faults service
/// (the agents inherit the switch from `capsule lab up`), and a test arms a named point on one
/// simulated host. Nothing of this is in the public API or the CLI.
/// </summary>
public static class FaultLab
{
    [ModuleInitializer]
    internal static void EnableForEveryLab() =>
        Environment.SetEnvironmentVariable(Agent.Faults.FaultInjector.EnvironmentSwitch, "1");

    /// <summary>
    /// Arms <paramref name="point"/> (see FaultPoints) on <paramref name="host"/>'s agent, for its next
    /// <paramref name="times"/> hits.
    /// </summary>
    public static async Task Arm(LabFixture lab, string host, string point, string action, int delayMs = 0,
        int times = 1)
    {
        var client = new Faults.FaultsClient(Channels.For(new LabPaths(lab.Name).AgentEndpoint(host)));
        await client.ArmAsync(new ArmRequest { Point = point, Action = action, Times = times, DelayMs = delayMs });
    }

    /// <summary>
    /// Disarms every fault on <paramref name="host"/>: one a failed test never reached must not fire later.
    /// </summary>
    public static async Task Clear(LabFixture lab, string host)
    {
        var client = new Faults.FaultsClient(Channels.For(new LabPaths(lab.Name).AgentEndpoint(host)));
        await client.ClearAsync(new FaultsEmpty());
    }

    /// <summary>The capsule named <paramref name="name"/> in `capsule ls --json` output, if listed.</summary>
    public static System.Text.Json.JsonElement? FindCapsule(string json, string name)
    {
        foreach (var c in System.Text.Json.JsonDocument.Parse(json).RootElement.EnumerateArray())
            if (c.GetProperty("name").GetString() == name) return c.Clone();
        return null;
    }

    /// <summary>Waits (bounded) until `capsule ls` shows the capsule in <paramref name="state"/>.</summary>
    public static async Task WaitForState(this LabFixture lab, string name, string state, int seconds = 30)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < until)
        {
            var r = await lab.Run("ls", "--json");
            if (r.Code == 0 && FindCapsule(r.Out, name)?.GetProperty("state").GetString() == state) return;
            await Task.Delay(50);
        }
        Xunit.Assert.Fail($"{name} never became {state}");
    }

    /// <summary>
    /// The last <paramref name="lines"/> lines of each host's agent log: what tells why a capsule
    /// did not settle, so it goes with the failure.
    /// </summary>
    public static string AgentLogTails(LabFixture lab, IEnumerable<string> hosts, int lines = 25)
    {
        var paths = new LabPaths(lab.Name);
        return string.Join("\n", hosts.Select(h => $"--- {h}:\n" +
            string.Join("\n", File.Exists(paths.AgentLog(h))
                ? File.ReadLines(paths.AgentLog(h)).TakeLast(lines) : [])));
    }

    /// <summary>The pid of <paramref name="host"/>'s agent now.</summary>
    public static int AgentPid(LabFixture lab, string host)
    {
        var file = new LabPaths(lab.Name).AgentPidFile(host);
        return ReadPid(file) ?? throw new InvalidOperationException($"no pid in {file}");
    }

    /// <summary>
    /// The pid in a daemon's pid file; null while there is none to read, as when a test polls for a
    /// restarted daemon and the file is missing or being rewritten.
    /// </summary>
    public static int? ReadPid(string file)
    {
        try { return int.TryParse(File.ReadAllText(file).Trim(), out var pid) ? pid : null; }
        catch (IOException) { return null; }
    }

    /// <summary>Whether process <paramref name="pid"/> exists (an unreaped zombie counts).</summary>
    public static bool Alive(int pid) => Directory.Exists($"/proc/{pid}");
}

/// <summary>Progress of a tools/stream.py client, read from its log.</summary>
public static class StreamProgressExtensions
{
    /// <summary>The bytes the stream client last reported as sent (0 before its first report).</summary>
    public static async Task<long> StreamProgress(this LabFixture lab, string capsule)
    {
        var last = (await lab.Logs(capsule)).Split('\n').LastOrDefault(l => l.StartsWith("PROGRESS sent="));
        return last is null ? 0 : long.Parse(last.Split(' ')[1][5..]);
    }

    /// <summary>Waits (bounded) until the stream client reports more than <paramref name="than"/> bytes sent.</summary>
    public static async Task WaitForStreamProgress(this LabFixture lab, string capsule, long than, int seconds = 30)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < until)
        {
            if (await lab.StreamProgress(capsule) > than) return;
            await Task.Delay(100);
        }
        Xunit.Assert.Fail($"{capsule}'s stream made no progress past {than} bytes in {seconds} s:\n" +
            $"{await lab.Logs(capsule)}");
    }
}
