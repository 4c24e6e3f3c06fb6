using Capsule.Core;

namespace Capsule.Agent;

/// <summary>How one host agent (capsuled) is set up; the lab fills these in for each simulated host.</summary>
internal sealed record AgentOptions(
    string Host,
    Locator Underlay,
    int Port,
    int UnderlayMtu,
    string Directory,
    string Listen,
    string StateDir,
    string NetnsPrefix,
    string Tun = "cap0")
{
    public int InnerMtu => UnderlayMtu - Wire.Overhead;
    public string CapsuleNetns(string capsule) => $"{NetnsPrefix}-c-{capsule}";
    public string CapsuleDir(string capsule) => Path.Combine(StateDir, "capsules", capsule);
}
