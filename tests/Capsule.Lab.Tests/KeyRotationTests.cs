using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>A two-host lab whose agents replace their data-plane keys every second.</summary>
public sealed class RotationLabFixture : LabFixture
{
    public RotationLabFixture()
    {
        Hosts = 2;
        Legacy = 0;
    }

    protected override IReadOnlyDictionary<string, string> DaemonEnvironment =>
        new Dictionary<string, string> { ["CAPSULE_AGENT__KEYROTATIONSECONDS"] = "1" };
}

/// <summary>
/// Keys rotate under traffic with no loss: the sender switches only once the receiver has the new key,
/// and the receiver still opens the previous one for what was in flight.
/// </summary>
[Collection("lab")]
public sealed class KeyRotationTests(RotationLabFixture lab) : IClassFixture<RotationLabFixture>
{
    [Fact]
    public async Task Numbered_datagrams_cross_several_key_rotations_with_none_lost()
    {
        var tool = LabFixture.Tool("udpseq.py");
        var (rx, _) = await lab.Create("kr", "h2", "python3", tool, "recv", "7760");
        try
        {
            await lab.WaitForLog("kr", "LISTENING");
            // The first keys are in place before the stream starts: its first datagrams must not meet none.
            await LabFixture.Until(async () => (await lab.Stats("h1"))["keys_sent"] >= 1
                && (await lab.Stats("h2"))["keys_received"] >= 1, "h1's first key to reach h2");
            var before = await lab.Stats("h2");
            var sentBefore = (await lab.Stats("h1"))["keys_sent"];
            var (_, sender) = await lab.Create("ks", "h1", "python3", tool, "send", rx, "7760", "500", "300");
            // Three rotations of h1's key to h2 while the stream runs.
            await LabFixture.Until(async () => (await lab.Stats("h1"))["keys_sent"] >= sentBefore + 3,
                "h1 to rotate its key three times");
            await LabFixture.Until(async () => Received(await lab.Logs("kr")) > 0, "datagrams to arrive");
            (await Cli.Exec("kill", ["-USR1", sender.ToString()])).Ok();
            var log = await lab.WaitForLog("kr", "DONE", seconds: 30);
            var done = log.Split('\n').Single(l => l.StartsWith("DONE"));
            Assert.Contains(" lost=0 ", done);
            Assert.Contains(" dup=0 ", done);
            var after = await lab.Stats("h2");
            foreach (var reason in new[] { "drop_bad_tag", "drop_replay", "drop_unknown_key" })
                Assert.Equal(before[reason], after[reason]);
            Assert.True(after["keys_received"] >= before["keys_received"] + 3);
        }
        finally
        {
            await lab.Run("rm", "ks");
            await lab.Run("rm", "kr");
        }
    }

    static long Received(string log) => log.Split('\n').Where(l => l.StartsWith("PROGRESS received="))
        .Select(l => long.Parse(l.Split(' ')[1]["received=".Length..])).LastOrDefault();
}
