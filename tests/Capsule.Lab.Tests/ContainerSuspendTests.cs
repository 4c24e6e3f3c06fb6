using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A container capsule (issue 13) suspended to a file and resumed on another host: its writable layer with its
/// owners, its user namespace's ids, its limits and a client's stream all come back; nothing stays behind.
/// </summary>
[Collection("lab")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ContainerSuspendTests(LabFixture lab) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-ctsusp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task A_suspended_container_resumes_elsewhere_with_its_layer_ids_limits_and_stream()
    {
        const string name = "ctsusp";
        var file = Path.Combine(_dir, name + ".capsule");
        // A folder of the lower layer that the capsule empties and makes anew: opaque in its layer, so the lower
        // layer's file stays hidden under it, also where it is resumed.
        var lower = Path.Combine(Path.GetTempPath(), $"{lab.Name}-{name}");
        Directory.CreateDirectory(lower);
        File.SetUnixFileMode(lower, (UnixFileMode)0x1ED); // 0755
        await File.WriteAllTextAsync(Path.Combine(lower, "old"), "from the lower layer\n");
        // Beside the server, a process of another user (nobody): CRIU checkpoints it from the capsule's user
        // namespace. A file of nobody's in the capsule's layer must keep its owner on the way.
        var start = $"echo kept > /etc/{name}-marker && chown 65534:65534 /etc/{name}-marker && " +
            $"rm -rf {lower} && mkdir {lower} && touch {lower}/new && " +
            "(setpriv --reuid=65534 --regid=65534 --clear-groups sleep infinity &) && " +
            $"exec python3 {LabFixture.Tool("stream.py")} server 7702";
        var (srv, pid) = await lab.CreateWith(name, "h1", ["--rootfs", "/", "--pids", "40"], "sh", "-c", start);
        try
        {
            await lab.WaitForLog(name, "LISTENING");
            var idBase = long.Parse((await File.ReadAllTextAsync($"/proc/{pid}/uid_map"))
                .Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            await lab.Create("ctsuspc", "h2", "python3", LabFixture.Tool("stream.py"), "client", srv, "7702", "10");
            await lab.WaitForStreamProgress("ctsuspc", 0);

            var cgroup = PidsCgroup(pid);
            (await lab.Run("suspend", name, "--to", file)).Ok();
            using (var doc = JsonDocument.Parse((await lab.Run("inspect", file, "--json")).Ok().Out))
            {
                var meta = doc.RootElement.GetProperty("meta");
                Assert.Equal("/", meta.GetProperty("root").GetProperty("lower").GetString());
                Assert.Equal(idBase, meta.GetProperty("root").GetProperty("id_base").GetInt64());
                Assert.Equal(40, meta.GetProperty("limits").GetProperty("pids").GetInt32());
            }
            Assert.Contains("own: / below its writable layer", (await lab.Run("inspect", file)).Ok().Out);
            await ContainerFaultTests.AssertNothingOn(lab, "h1", name);
            Assert.False(Directory.Exists(cgroup), $"{name}'s cgroup is left on h1");

            var r = (await lab.Run("resume", file, "--on", "h3", "--json")).Ok();
            int now;
            using (var doc = JsonDocument.Parse(r.Out))
                now = doc.RootElement.GetProperty("pid").GetInt32();
            Assert.StartsWith($"0 {idBase} ", Squeeze(await File.ReadAllTextAsync($"/proc/{now}/uid_map")));
            var ps = (await lab.InCapsule(name, "ps", "-eo", "user=,args=")).Ok().Out;
            Assert.Contains(ps.Split('\n'), l => l.StartsWith("nobody") && l.Contains("sleep infinity"));
            var marker = Path.Combine(new LabPaths(lab.Name).HostStateDir("h3"), "capsules", name, "upper", "etc",
                name + "-marker");
            Assert.Equal(idBase + 65534, long.Parse((await Cli.Exec("stat", ["-c", "%u", marker])).Ok().Out.Trim()));
            Assert.Equal("kept\n", (await lab.InCapsule(name, "cat", $"/etc/{name}-marker")).Ok().Out);
            Assert.Equal("new\n", (await lab.InCapsule(name, "ls", lower)).Ok().Out);
            Assert.Equal("40", File.ReadAllText(Path.Combine(PidsCgroup(now), "pids.max")).Trim());

            var done = (await lab.WaitForLog("ctsuspc", "DONE", seconds: 90))
                .Split('\n')
                .Single(l => l.StartsWith("DONE"));
            Assert.Contains($"echoed={done.Split(' ')[1][5..]}", done);
        }
        finally
        {
            await lab.Run("rm", "ctsuspc");
            await lab.Run("rm", name);
            Directory.Delete(lower, recursive: true);
        }
    }

    static string Squeeze(string s) => string.Join(' ', s.Split(' ', StringSplitOptions.RemoveEmptyEntries));

    /// <summary>The folder of a process's cgroup in the pids hierarchy (the capsule's own, named after it).</summary>
    static string PidsCgroup(int pid)
    {
        var line = File.ReadAllLines($"/proc/{pid}/cgroup").Select(l => l.Split(':', 3)).Single(p => p[1] == "pids");
        Assert.Contains("-c-ctsusp", line[2]);
        return "/sys/fs/cgroup/pids" + line[2];
    }
}
