using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// `capsule bench cli` runs end to end and prints its table with every row. A smoke test: the
/// numbers are the benchmark's to print, never a test's to judge (this machine is shared).
/// </summary>
public class BenchCliTests
{
    static readonly string[] Rows =
    [
        "/bin/true (floor)", "ip netns list", "capsule --help", "capsule ls", "capsule stats h1",
        "capsule exec c -- true", "capsule create", "capsule rm",
    ];

    [Fact]
    public async Task Prints_every_command_and_removes_its_lab()
    {
        var lab = "t" + Convert.ToHexStringLower(Guid.NewGuid().ToByteArray())[..6];
        try
        {
            var r = (await Cli.Exec(Cli.Binary, ["--lab", lab, "bench", "cli", "--runs", "3"], 300)).Ok();
            foreach (var h in (string[])["COMMAND", "P50 ms", "P90 ms", "GOAL ms", "x FLOOR"])
                Assert.Contains(h, r.Out);
            foreach (var row in Rows)
                Assert.Contains(row, r.Out);
            Assert.Contains("3 timed runs each", r.Out);
            var left = await Cli.Exec("ip", ["netns", "list"]);
            Assert.DoesNotContain(lab + "-", left.Out);
        }
        finally
        {
            await Cli.Run(lab, "lab", "down");
        }
    }
}
