using Capsule.Lab;
using Capsule.Protos;
using Capsule.Rpc;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Holds with leases, and a drain that shares the egress thread: a migration source that dies
/// after asking a peer to hold cannot leave that peer holding (and its TCP peers paused) forever,
/// and a large release does not stall the other capsules of the host while it drains.
/// </summary>
[Collection("lab")]
public sealed class HoldLeaseTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    LabPaths Paths => new(lab.Name);

    HostAgent.HostAgentClient Agent(string host) => new(Channels.For(Paths.AgentEndpoint(host)));

    string Underlay(string host) => Paths.Underlay(int.Parse(host[1..]));

    /// <summary>Polls a host's counters until <paramref name="done"/> holds (bounded).</summary>
    async Task<Dictionary<string, long>> WaitForStats(string host, Func<Dictionary<string, long>, bool> done,
        string what, int seconds = 30)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            var s = await lab.Stats(host);
            if (done(s)) return s;
            if (DateTime.UtcNow > until) Assert.Fail($"{what} never happened on {host}: {string.Join(", ", s)}");
            await Task.Delay(100);
        }
    }

    static (long Sent, long Echoed) Done(string log)
    {
        var done = log.Split('\n').Single(l => l.StartsWith("DONE"));
        var fields = done.Split(' ');
        return (long.Parse(fields[1]["sent=".Length..]), long.Parse(fields[2]["echoed=".Length..]));
    }

    [Fact]
    public async Task A_hold_whose_source_never_releases_expires_and_flushes_to_the_capsules_current_host()
    {
        var (srv, _) = await lab.Create("lsrv", "h2", Stream("server", "7100"));
        await lab.WaitForLog("lsrv", "LISTENING");
        await lab.Create("lcli", "h1", Stream("client", srv, "7100", "8"));
        try
        {
            await lab.WaitForLog("lcli", "PROGRESS sent=");
            var before = await lab.Stats("h1");
            // Acting as a migration source of lsrv that dies right after asking h1 to hold: no Release ever.
            var cut = await Agent("h1").HoldAsync(
                new HoldRequest { Locator = srv, Via = Underlay("h2"), LeaseMs = 1500 },
                deadline: DateTime.UtcNow.AddSeconds(10));
            Assert.True(cut.KeyId != 0 && cut.Sent.Any(n => n > 0), "h1 had sent to lsrv through h2 before the hold");
            var after = await WaitForStats("h1", s => s["holds_expired"] > before["holds_expired"], "the expiry");
            Assert.True(after["held"] > before["held"], "the client's packets were held while the hold lasted");
            Assert.True(after["flushed"] > before["flushed"], "what was held went on to h2");
            // The directory still names h2: the hold went there, nothing was dropped.
            Assert.Equal(before["hold_expired_dropped"], after["hold_expired_dropped"]);
            Assert.True(after["tcp_reopened"] > before["tcp_reopened"], "the paused client got its window back");
            var log = await lab.WaitForLog("lcli", "DONE");
            var (sent, echoed) = Done(log);
            Assert.True(sent > 0);
            Assert.Equal(sent, echoed);
            Assert.DoesNotContain("ERROR", await lab.Logs("lsrv"));
        }
        finally
        {
            await lab.Run("rm", "lcli");
            await lab.Run("rm", "lsrv");
        }
    }

    // A UDP receiver that says ERROR if a datagram arrives out of order (a loss is allowed, a reordering is not).
    const string Sink = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("LISTENING", flush=True)
last, n, said = -1, 0, 0
while True:
    seq = int(s.recv(64))
    if seq <= last:
        print("ERROR reordered", seq, "after", last, flush=True)
    last, n = seq, n + 1
    if time.time() - said > 0.2:
        print("RECV", n, "last", last, flush=True)
        said = time.time()
""";

    // Numbered datagrams at about 3000/s, for up to a minute.
    const string Source = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.time() + 60
seq = 0
print("SENDING", flush=True)
while time.time() < end:
    s.sendto(b"%d" % seq, (sys.argv[1], int(sys.argv[2])))
    seq += 1
    if seq % 30 == 0:
        time.sleep(0.01)
""";

    static long LastRecv(string log) => log.Split('\n')
        .Where(l => l.StartsWith("RECV "))
        .Select(l => long.Parse(l.Split(' ')[1]))
        .DefaultIfEmpty(0)
        .Last();

    [Fact]
    public async Task Draining_a_large_hold_keeps_its_order_and_does_not_stall_another_capsule_of_the_host()
    {
        var (sink, _) = await lab.Create("dsink", "h2", "python3", "-c", Sink, "7200");
        var (echo, _) = await lab.Create("decho", "h2", Stream("server", "7201"));
        await lab.WaitForLog("dsink", "LISTENING");
        await lab.WaitForLog("decho", "LISTENING");
        await lab.Create("dsrc", "h1", "python3", "-c", Source, sink, "7200");
        try
        {
            await lab.WaitForLog("dsink", "RECV");
            // Another capsule of h1 in a request/response exchange with h2, across the hold and the drain.
            await lab.Create("drr", "h1", Stream("rr", echo, "7201", "8"));
            await lab.WaitForLog("drr", "PROGRESS replies=");
            var before = await lab.Stats("h1");
            var agent = Agent("h1");
            var hold = new HoldRequest
            {
                Locator = sink, Via = Underlay("h2"), Capacity = 16384, LeaseMs = 60_000,
            };
            await agent.HoldAsync(hold, deadline: DateTime.UtcNow.AddSeconds(10));
            await WaitForStats("h1", s => s["held"] - before["held"] >= 1500, "holding 1500 datagrams");
            var released = await agent.ReleaseAsync(new ReleaseRequest { Locator = sink, ToUnderlay = Underlay("h2") },
                deadline: DateTime.UtcNow.AddSeconds(30));
            Assert.True(released.Flushed >= 1500, released.ToString());
            var rr = await lab.WaitForLog("drr", "DONE");
            Assert.DoesNotContain("ERROR", rr);
            // What was held, and what the source sent during the drain, arrives behind it in order.
            var sinkLog = await lab.WaitForLog("dsink", "RECV");
            var until = DateTime.UtcNow.AddSeconds(30);
            while (LastRecv(sinkLog) < released.Flushed && DateTime.UtcNow < until)
            {
                await Task.Delay(200);
                sinkLog = await lab.Logs("dsink");
            }
            Assert.DoesNotContain("ERROR", sinkLog);
            Assert.True(LastRecv(sinkLog) >= released.Flushed, sinkLog[^Math.Min(sinkLog.Length, 400)..]);
            var after = await lab.Stats("h1");
            Assert.Equal(before["holds_expired"], after["holds_expired"]);
        }
        finally
        {
            await lab.Run("rm", "drr");
            await lab.Run("rm", "dsrc");
            await lab.Run("rm", "decho");
            await lab.Run("rm", "dsink");
        }
    }
}
