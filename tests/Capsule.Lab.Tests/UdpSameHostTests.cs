using Capsule.Lab;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Numbered datagrams between two capsules while the receiver (UDP policy buffer) moves onto the
/// sender's host and away again. Seen in the soak before the fix: 12-18 datagrams lost per move
/// onto the sender's host (read from the TUN for a capsule now local, and dropped as unroutable),
/// one per move away from it (queued after the UDP wait, before the seal), none of them counted.
/// </summary>
[Collection("lab")]
public sealed class UdpSameHostTests(LabFixture lab)
{
    [Fact]
    public async Task A_udp_receiver_moving_onto_its_senders_host_and_away_misses_no_datagram()
    {
        var tool = LabFixture.Tool("udpseq.py");
        var (rx, _) = await lab.CreateWith("ur", "h2", ["--udp-policy", "buffer"], "python3", tool, "recv", "7750");
        try
        {
            await lab.WaitForLog("ur", "LISTENING");
            var (_, sender) = await lab.Create("ut", "h1", "python3", tool, "send", rx, "7750", "200", "300");
            await WaitForMore(0);
            foreach (var to in new[] { "h1", "h2", "h1" })
            {
                var m = await lab.Migrate("ur", to);
                Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
                await WaitForMore(Received(await lab.Logs("ur")));
            }
            (await Cli.Exec("kill", ["-USR1", sender.ToString()])).Ok();
            var log = await lab.WaitForLog("ur", "DONE", seconds: 30);
            var done = log.Split('\n').Single(l => l.StartsWith("DONE"));
            Assert.Contains(" lost=0 ", done);
            Assert.Contains(" dup=0 ", done);
        }
        finally
        {
            await lab.Run("rm", "ut");
            await lab.Run("rm", "ur");
        }
    }

    /// <summary>Waits until the receiver has counted 200 datagrams more than <paramref name="received"/>.</summary>
    Task WaitForMore(long received) => LabFixture.Until(async () =>
        Received(await lab.Logs("ur")) > received + 200, "datagrams to arrive at ur");

    static long Received(string log) => log.Split('\n').Where(l => l.StartsWith("PROGRESS received="))
        .Select(l => long.Parse(l.Split(' ')[1]["received=".Length..])).LastOrDefault();
}
