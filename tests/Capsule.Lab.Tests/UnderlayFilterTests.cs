using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A rogue machine on the underlay (a namespace plugged into the lab's underlay segment) that routes the
/// locator pool to a host and sends plain packets at a capsule: the host drops and counts each one
/// (kernel_pool_from_underlay); the same capsule still gets what a peer sends through the overlay.
/// </summary>
[Collection("lab")]
public sealed class UnderlayFilterTests(LabFixture lab)
{
    static readonly string UdpEcho = UdpScripts.Echo(7600);
    static readonly string Send = UdpScripts.Send(7600);

    [Fact]
    public async Task Plain_packets_for_a_capsule_injected_from_the_underlay_are_dropped_and_counted()
    {
        var (loc, _) = await lab.Create("target", "h2", "python3", "-c", UdpEcho);
        await lab.Create("friend", "h1", "sleep", "infinity");
        try
        {
            await lab.WaitForLog("target", "READY");
            await using var rogue = await RogueMachine.PlugInAsync(lab.Name, "rogue", 200);
            await rogue.RunAsync("ip", "route", "add", LabPaths.Pool, "via", new LabPaths(lab.Name).Underlay(2));
            var before = (await lab.Stats("h2")).GetValueOrDefault("drop_kernel_pool_from_underlay");

            await rogue.RunAsync("python3", "-c", Send, loc, "rogue", "5");
            await LabFixture.Until(async () =>
                    (await lab.Stats("h2")).GetValueOrDefault("drop_kernel_pool_from_underlay") >= before + 5,
                "h2 to count the rogue's 5 packets as dropped");

            // The capsule itself is reachable: a peer's datagram comes through the overlay, after the rogue's.
            (await lab.InCapsule("friend", "python3", "-c", Send, loc, "friend", "3")).Ok();
            var log = await lab.WaitForLog("target", "GOT friend");
            Assert.DoesNotContain("rogue", log);
        }
        finally
        {
            await lab.Run("rm", "target");
            await lab.Run("rm", "friend");
        }
    }
}
