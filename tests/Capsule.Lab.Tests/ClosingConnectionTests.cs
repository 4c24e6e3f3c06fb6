using Capsule.Lab;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A connection the capsule closes while megabytes are still unsent lives on in the kernel with no
/// process holding it, and CRIU cannot take such a socket: moved as it is, its reader gets a reset
/// (seen in the soak: a download from python's http.server, reset after the move). The move waits
/// for such connections, and undoes and begins again a sync during which one appears.
/// </summary>
[Collection("lab")]
public sealed class ClosingConnectionTests(LabFixture lab)
{
    const int Megabytes = 8;

    [Fact]
    public async Task A_connection_closed_during_the_sync_with_megabytes_unsent_reaches_its_reader_whole()
    {
        var trigger = Path.Combine(Path.GetTempPath(), $"{lab.Name}-close-now");
        File.Delete(trigger);
        var tool = LabFixture.Tool("closer.py");
        var (srv, _) = await lab.Create("cz", "h2", "python3", tool, "serve", "7740", $"{Megabytes}", trigger);
        try
        {
            await lab.WaitForLog("cz", "LISTENING");
            // An ordinary host reads at 1 MB/s: most of the download waits in the server's send buffer.
            var fetch = lab.OnHost("l1", "python3", tool, "fetch", srv, "7740", "1024");
            await lab.WaitForLog("cz", "SENT", seconds: 60);
            // The source pauses after its sync; the server closes then, its reader held by the gateway.
            await FaultLab.Arm(lab, "h2", "source.after-sync", "delay", delayMs: 1500);
            var move = lab.Migrate("cz", "h3");
            await lab.WaitForState("cz", "migrating");
            await File.WriteAllTextAsync(trigger, "");
            var m = await move;
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.Equal(0, m.GetProperty("closing_connections_lost").GetInt32());
            var r = await fetch;
            Assert.True(r.Code == 0 && r.Out.Contains($"DONE bytes={Megabytes << 20}"),
                $"reader: {r.Out}{r.Err}\nmigration: {m}\nserver: {await lab.Logs("cz")}");
        }
        finally
        {
            File.Delete(trigger);
            await lab.Run("rm", "cz");
        }
    }
}
