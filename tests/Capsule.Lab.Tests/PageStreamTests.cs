using System.Text.RegularExpressions;
using Capsule.Lab;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A stop-and-copy move's memory goes to the target as CRIU dumps it, not through a file first (issue 12,
/// item 3): the capsule's memory arrives whole, and a source that must restore the capsule itself after a
/// failed move (its frozen tree gone) does so from the copy of the stream it kept.
/// </summary>
[Collection("lab")]
public sealed partial class PageStreamTests(LabFixture lab)
{
    /// <summary>
    /// 24 MiB of random bytes in memory, their SHA-256 printed at the start and again, with a count, each time a
    /// file named `check` appears in the capsule's folder (then removed): memory that came back wrong shows.
    /// </summary>
    static readonly string[] Memory =
    [
        "python3", "-u", "-c",
        "import hashlib,os,time\n" +
        "b=bytearray(os.urandom(24<<20)); n=0\n" +
        "print('SHA', 0, hashlib.sha256(b).hexdigest())\n" +
        "while True:\n" +
        "  time.sleep(0.05)\n" +
        "  if os.path.exists('check'):\n" +
        "    os.remove('check'); n+=1; print('SHA', n, hashlib.sha256(b).hexdigest())\n",
    ];

    [Fact]
    public async Task A_capsules_memory_crosses_as_it_is_dumped_and_arrives_whole()
    {
        const string name = "pagemem";
        var (_, pid) = await lab.Create(name, "h1", Memory);
        try
        {
            var before = await Sha(name, 0);
            var m = await lab.Migrate(name, "h2");

            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.True(m.GetProperty("image_bytes").GetInt64() > 24 << 20, m.ToString());
            Assert.Equal(before, await Check(name, "h2", 1));
            // The target keeps no folder of the move; the source none at all.
            var paths = new LabPaths(lab.Name);
            foreach (var host in (string[])["h1", "h2"])
                Assert.Empty(Directory.EnumerateFileSystemEntries(
                    Path.Combine(paths.HostStateDir(host), "migrations"), name + "*"));
            Assert.False(Directory.Exists($"/proc/{pid}"), "the source's tree outlived the move");
        }
        finally
        {
            await lab.Run("rm", name);
        }
    }

    [Fact]
    public async Task A_source_whose_frozen_tree_is_gone_after_a_failed_move_restores_it_from_the_memory_it_sent()
    {
        const string name = "pagekept";
        var (_, pid) = await lab.Create(name, "h1", Memory);
        try
        {
            var before = await Sha(name, 0);
            // Frozen and dumped, the source waits; the target will refuse the restore.
            await FaultLab.Arm(lab, "h1", "source.after-dump", "delay", delayMs: 8000);
            await FaultLab.Arm(lab, "h2", "target.restore", "fail");
            var move = lab.Migrate(name, "h2");
            await LabFixture.Until(() => Task.FromResult(File.Exists(DumpDone("h1", name))), "the dump's end", 60);
            // The tree goes while it is frozen (as in a reboot): only the images are left to restore it from.
            await Cli.Exec("kill", ["-9", pid.ToString()]);
            var m = await move;

            Assert.False(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.True(m.GetProperty("resumed_on_source").GetBoolean(), m.ToString());
            Assert.Equal("h1", m.GetProperty("host").GetString());
            Assert.NotEqual(pid, m.GetProperty("pid").GetInt32());
            Assert.Equal(before, await Check(name, "h1", 1));
        }
        finally
        {
            await FaultLab.Clear(lab, "h1");
            await FaultLab.Clear(lab, "h2");
            await lab.Run("rm", name);
        }
    }

    /// <summary>Made by CRIU's post-dump hook: the dump is over, and the tree left frozen for the verdict.</summary>
    string DumpDone(string host, string name) =>
        Path.Combine(new LabPaths(lab.Name).HostStateDir(host), "migrations", name, "images", "verdict.ready");

    /// <summary>Asks the capsule on <paramref name="host"/> for its memory's SHA-256 once more.</summary>
    async Task<string> Check(string name, string host, int n)
    {
        var folder = Path.Combine(new LabPaths(lab.Name).HostStateDir(host), "capsules", name);
        await File.WriteAllTextAsync(Path.Combine(folder, "check"), "");
        return await Sha(name, n);
    }

    async Task<string> Sha(string name, int n)
    {
        var log = await lab.WaitForLog(name, $"SHA {n} ");
        return ShaLine().Matches(log).Single(x => x.Groups[1].Value == n.ToString()).Groups[2].Value;
    }

    [GeneratedRegex(@"SHA (\d+) ([0-9a-f]{64})")]
    private static partial Regex ShaLine();
}
