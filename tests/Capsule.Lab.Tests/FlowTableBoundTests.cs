using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>One host and an ordinary host behind a gateway that tracks at most 16 TCP flows.</summary>
public sealed class SmallFlowTableLabFixture : LabFixture
{
    public const int MaxFlows = 16;

    public SmallFlowTableLabFixture()
    {
        Hosts = 1;
        Legacy = 1;
    }

    protected override IReadOnlyDictionary<string, string> DaemonEnvironment =>
        new Dictionary<string, string> { ["CAPSULE_AGENT__MAXTCPFLOWS"] = MaxFlows.ToString() };
}

/// <summary>
/// The gateway's TCP flow table is bounded by the agent (issue 10, item 6): anyone who reaches a capsule
/// through the gateway adds flows to it, so past MaxTcpFlows the idlest are forgotten, counted, and traffic
/// goes on regardless (a forgotten flow is only one the gateway could not pause in a move).
/// </summary>
[Collection("lab")]
public sealed class FlowTableBoundTests(SmallFlowTableLabFixture lab) : IClassFixture<SmallFlowTableLabFixture>
{
    [Fact]
    public async Task Connections_past_MaxTcpFlows_evict_the_idlest_flows_and_all_are_answered()
    {
        var (web, _) = await lab.Create("fweb", "h1", "python3", "-m", "http.server", "8091");
        await LabFixture.Until(async () =>
            (await lab.OnHost("l1", "curl", "-s", "-o", "/dev/null", "-m", "2", $"http://{web}:8091/")).Code == 0,
            $"http://{web}:8091/ to answer l1", seconds: 30);
        var before = await lab.Stats("gw");
        const int connections = 40;
        // One connection each, closed by the server (FIN): the gateway keeps each flow until it is evicted.
        var r = await lab.OnHost("l1", "sh", "-c",
            $"ok=0; for i in $(seq {connections}); do curl -s -o /dev/null -m 5 http://{web}:8091/ && " +
            "ok=$((ok+1)); done; echo $ok");
        Assert.Equal(connections.ToString(), r.Ok().Out.Trim());
        var after = await lab.Stats("gw");
        Assert.InRange(after["tcp_flows_tracked"], 1, SmallFlowTableLabFixture.MaxFlows);
        // Each connection is a new flow; the table had room for at most 16 of them and the first curl's.
        var evicted = after["tcp_flows_evicted"] - before["tcp_flows_evicted"];
        Assert.InRange(evicted, connections - SmallFlowTableLabFixture.MaxFlows, connections);
        Assert.Equal(0, after["tcp_flows_refused"] - before["tcp_flows_refused"]);
    }
}
