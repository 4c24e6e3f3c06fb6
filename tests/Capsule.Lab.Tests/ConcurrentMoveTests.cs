using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Moves that overlap, as when a host that runs both ends of a connection is drained: each end's
/// new host sends to the other end while that one is still moving, from a host that was never
/// asked to hold. Its packets must wait in the old host's own hold, never meet a namespace whose
/// sockets CRIU has taken (that namespace would answer with a reset).
/// </summary>
[Collection("lab")]
public sealed class ConcurrentMoveTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    [Fact]
    public async Task Both_ends_of_a_stream_moving_at_the_same_moment_keep_every_byte()
    {
        for (var round = 0; round < 3; round++)
        {
            var (srv, _) = await lab.Create("bsrv", "h1", Stream("server", "7400"));
            try
            {
                await lab.WaitForLog("bsrv", "LISTENING");
                await lab.Create("bcli", "h1", Stream("client", srv, "7400", "8"));
                await lab.WaitForStreamProgress("bcli", 0);
                var moves = await Task.WhenAll(lab.Migrate("bsrv", "h2"), lab.Migrate("bcli", "h3"));
                foreach (var m in moves) Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
                var log = await lab.WaitForLog("bcli", "DONE");
                var done = log.Split('\n').Single(l => l.StartsWith("DONE"));
                Assert.Contains($"echoed={done.Split(' ')[1][5..]}", done);
                Assert.DoesNotContain("ERROR", await lab.Logs("bsrv"));
            }
            finally
            {
                await lab.Run("rm", "bcli");
                await lab.Run("rm", "bsrv");
            }
        }
    }

    [Fact]
    public async Task Several_capsules_of_one_host_moving_at_once_all_keep_their_streams()
    {
        string[] clients = ["mc1", "mc2", "mc3"];
        try
        {
            // One server each: stream.py serves one connection at a time.
            var servers = new List<string>();
            for (var i = 0; i < clients.Length; i++)
                servers.Add((await lab.Create($"ms{i + 1}", "h3", Stream("server", $"{7410 + i}"))).Locator);
            for (var i = 0; i < clients.Length; i++) await lab.WaitForLog($"ms{i + 1}", "LISTENING");
            for (var i = 0; i < clients.Length; i++)
                await lab.Create(clients[i], "h1", Stream("client", servers[i], $"{7410 + i}", "20"));
            foreach (var c in clients) await lab.WaitForStreamProgress(c, 0);
            var moves = await Task.WhenAll(clients.Select((c, i) => lab.Migrate(c, i % 2 == 0 ? "h2" : "h3")));
            foreach (var m in moves) Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            foreach (var c in clients)
            {
                var done = (await lab.WaitForLog(c, "DONE")).Split('\n').Single(l => l.StartsWith("DONE"));
                Assert.Contains($"echoed={done.Split(' ')[1][5..]}", done);
            }
        }
        finally
        {
            foreach (var c in clients) await lab.Run("rm", c);
            for (var i = 1; i <= clients.Length; i++) await lab.Run("rm", $"ms{i}");
        }
    }
}
