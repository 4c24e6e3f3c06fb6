using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>`lab down` leaves nothing: no namespace, no process, no file; also after a crash of the agents.</summary>
[Collection("lab")]
public sealed class LabDownTests
{
    [Fact]
    public async Task Lab_down_removes_every_namespace_process_and_file_even_after_a_crash()
    {
        var lab = new LabFixture();
        try
        {
            await lab.InitializeAsync();
            Assert.Contains($"\"name\": \"{lab.Name}\"", await Contexts());
            await lab.Create("keep", "h1", "sleep", "infinity");
            await lab.Create("keep2", "h2", "sh", "-c", "sleep infinity | cat");
            // Simulate a crash: kill every agent and the directory with SIGKILL, no goodbye.
            var pids = new List<string>();
            foreach (var f in Directory.GetFiles($"/run/capsule/labs/{lab.Name}", "*.pid"))
                pids.Add((await File.ReadAllTextAsync(f)).Trim());
            Assert.NotEmpty(pids);
            foreach (var pid in pids) (await Cli.Exec("kill", ["-9", pid])).Ok();
            // Down must find them dead (gone, or a zombie nobody reaped), not dying.
            await LabFixture.Until(() => Task.FromResult(pids.All(Dead)), "the killed agents to die", seconds: 10);
        }
        finally
        {
            (await lab.Run("lab", "down")).Ok();
        }
        Assert.DoesNotContain(Directory.GetFiles("/run/netns"), n => Path.GetFileName(n).StartsWith(lab.Name + "-"));
        Assert.False(Directory.Exists($"/run/capsule/labs/{lab.Name}"));
        Assert.False(Directory.Exists($"/var/lib/capsule/labs/{lab.Name}"));
        // Its context went with it.
        Assert.DoesNotContain($"\"name\": \"{lab.Name}\"", await Contexts());
        var leftovers = Directory.GetDirectories("/proc")
            .Where(d => int.TryParse(Path.GetFileName(d), out _)).Where(d =>
        {
            try { return File.ReadAllText(Path.Combine(d, "cmdline")).Contains($"/labs/{lab.Name}"); }
            catch (IOException) { return false; }
            catch (UnauthorizedAccessException) { return false; }
        }).ToList();
        Assert.Empty(leftovers);
    }

    static async Task<string> Contexts() => (await Cli.Exec(Cli.Binary, ["context", "ls", "--json"])).Ok().Out;

    static bool Dead(string pid)
    {
        try { return File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1][0] == 'Z'; }
        catch (IOException) { return true; } // DirectoryNotFoundException and FileNotFoundException included
    }
}
