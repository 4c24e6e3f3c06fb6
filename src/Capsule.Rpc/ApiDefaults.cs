namespace Capsule.Rpc;

/// <summary>
/// The API's defaults: what an agent uses when a request leaves a field 0, and what clients (the CLI) show
/// as the default. Part of the contract, so the CLI need not know the agent's own constants.
/// </summary>
public static class ApiDefaults
{
    /// <summary>A move's per-capsule hold bound at each host (packets; MigrateRequest.hold_packets).</summary>
    public const int HoldPackets = 4096;
}
