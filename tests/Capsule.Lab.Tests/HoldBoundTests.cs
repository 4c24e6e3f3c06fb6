using Capsule.Lab;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Holds are bounded by the agent, not by whoever asks (issue 10, item 6): a Hold's capacity and lease are
/// cut to the agent's maxima, and past MaxHolds (32 by default) a new hold is refused with a clear error;
/// both counted.
/// </summary>
[Collection("lab")]
public sealed class HoldBoundTests(LabFixture lab)
{
    LabPaths Paths => new(lab.Name);

    [Fact]
    public async Task A_host_clamps_what_a_hold_asks_and_refuses_holds_past_its_most()
    {
        var agent = new HostAgent.HostAgentClient(Channels.For(Paths.AgentEndpoint("h3")));
        var via = Paths.Underlay(3);
        var before = await lab.Stats("h3");
        var taken = new List<string>();
        RpcException? refused = null;
        try
        {
            // Locators no capsule of the lab gets (the pool's last /24): nothing is sent to them.
            for (var i = 1; i <= 40 && refused is null; i++)
            {
                var loc = $"100.64.255.{i}";
                try
                {
                    await agent.HoldAsync(new HoldRequest
                    {
                        Locator = loc, Via = via, Capacity = 50_000_000, LeaseMs = 3_600_000,
                    }, deadline: DateTime.UtcNow.AddSeconds(10));
                    taken.Add(loc);
                }
                catch (RpcException e)
                {
                    refused = e;
                }
            }
            Assert.NotNull(refused);
            Assert.Equal(StatusCode.ResourceExhausted, refused.StatusCode);
            Assert.Contains("MaxHolds 32", refused.Status.Detail);
            Assert.InRange(taken.Count, 1, 32);
            var after = await lab.Stats("h3");
            Assert.Equal(taken.Count + 1, after["holds_clamped"] - before["holds_clamped"]);
            Assert.Equal(1, after["holds_refused"] - before["holds_refused"]);
        }
        finally
        {
            foreach (var loc in taken)
                await agent.ReleaseAsync(new ReleaseRequest { Locator = loc },
                    deadline: DateTime.UtcNow.AddSeconds(10));
        }
    }
}
