using System.Security.Cryptography;
using Capsule.Lab;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A capsule's own files go to the target before the freeze (issue 12, item 2): the freeze sends only what
/// changed since, and what changed, appeared or went in between arrives as it is at the freeze.
/// </summary>
[Collection("lab")]
public sealed class StagingTests(LabFixture lab)
{
    const int DataMb = 100;

    [Fact]
    public async Task A_capsules_files_go_ahead_of_the_freeze_and_what_changed_since_follows_at_it()
    {
        const string name = "files";
        var paths = new LabPaths(lab.Name);
        string Folder(string host) => Path.Combine(paths.HostStateDir(host), "capsules", name);
        await lab.Create(name, "h1", "sh", "-c",
            $"head -c {DataMb}M /dev/urandom > data.bin && head -c 1M /dev/urandom > hot.bin && mkdir -p sub " +
            "&& echo old > sub/gone.txt && echo READY && exec sleep 100000");
        try
        {
            await lab.WaitForLog(name, "READY");
            var src = Folder("h1");
            var data = Sha(Path.Combine(src, "data.bin"));
            // Only files left alone for a second go ahead (StagedFiles): wait until these are.
            await LabFixture.Until(() => Task.FromResult(
                    Directory.EnumerateFiles(src, "*", SearchOption.AllDirectories)
                        .Where(f => !f.EndsWith(".log", StringComparison.Ordinal))
                        .All(f => File.GetLastWriteTimeUtc(f) < DateTime.UtcNow.AddSeconds(-1.5))),
                "the capsule's files to settle", 30);

            // Held after the sync (the stage is done), the capsule's folder changes before the freeze:
            // a file rewritten with the same size, one deleted, one new.
            await FaultLab.Arm(lab, "h1", "source.after-sync", "delay", delayMs: 8000);
            var move = lab.Migrate(name, "h2");
            await lab.WaitForState(name, "migrating");
            var hot = RandomNumberGenerator.GetBytes(1 << 20);
            await File.WriteAllBytesAsync(Path.Combine(src, "hot.bin"), hot);
            File.Delete(Path.Combine(src, "sub", "gone.txt"));
            await File.WriteAllTextAsync(Path.Combine(src, "sub", "new.txt"), "new\n");
            var inventory = Path.Combine(paths.HostStateDir("h1"), "migrations", name, "images", "inventory.img");
            Assert.False(File.Exists(inventory), "the test's changes came after the dump: its 8 s window was missed");
            var m = await move;

            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            var staged = m.GetProperty("staged_bytes").GetInt64();
            var image = m.GetProperty("image_bytes").GetInt64();
            Assert.True(staged > DataMb << 20, $"staged {staged} bytes: {m}");
            Assert.True(image < DataMb << 19, $"the freeze sent {image} bytes, staged files and all: {m}");
            var dst = Folder("h2");
            Assert.Equal(data, Sha(Path.Combine(dst, "data.bin")));
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(hot)), Sha(Path.Combine(dst, "hot.bin")));
            Assert.False(File.Exists(Path.Combine(dst, "sub", "gone.txt")), "a file deleted before the freeze came");
            Assert.Equal("new\n", await File.ReadAllTextAsync(Path.Combine(dst, "sub", "new.txt")));
            Assert.Contains("READY", await lab.Logs(name));
            // Nothing staged is left aside on the target, nor anything of the capsule on the source.
            Assert.Empty(Directory.EnumerateDirectories(
                Path.Combine(paths.HostStateDir("h2"), "migrations"), "*.staged"));
            Assert.False(Directory.Exists(src));
        }
        finally
        {
            await lab.Run("rm", name);
        }
    }

    static string Sha(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }
}
