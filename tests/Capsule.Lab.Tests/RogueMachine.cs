using Capsule.Agent.Linux;

namespace Capsule.Lab.Tests;

/// <summary>
/// A machine on a lab's underlay that is none of the cluster's (issue 10's attacker): a network namespace
/// plugged into the underlay bridge with an address of its own. Named with the lab's prefix, so `lab down`
/// removes it too whatever happens; disposing it removes it at once, its processes first.
/// </summary>
public sealed class RogueMachine : IAsyncDisposable
{
    RogueMachine(string netns, string address)
    {
        Netns = netns;
        Address = address;
    }

    public string Netns { get; }
    public string Address { get; }

    /// <summary>Plugs <c>LAB-NAME</c> into the lab's underlay as address .<paramref name="hostPart"/>.</summary>
    public static async Task<RogueMachine> PlugInAsync(string lab, string name, int hostPart)
    {
        var paths = new LabPaths(lab);
        var rogue = new RogueMachine($"{lab}-{name}", paths.Underlay(hostPart));
        try
        {
            await Capsule.Agent.Linux.Netns.AddAsync(rogue.Netns);
            await Cmd.Ip(rogue.Netns, "link", "add", "ul0", "type", "veth", "peer", "name", name, "netns",
                paths.UnderlayNetns);
            await Cmd.Ip(paths.UnderlayNetns, "link", "set", name, "master", "br0", "up");
            await Cmd.Ip(rogue.Netns, "addr", "add", rogue.Address + "/24", "dev", "ul0");
            await Cmd.Ip(rogue.Netns, "link", "set", "ul0", "up");
            return rogue;
        }
        catch
        {
            await rogue.DisposeAsync();
            throw;
        }
    }

    /// <summary>Runs a command on the rogue machine; fails the test when it fails.</summary>
    public async Task RunAsync(params string[] command) =>
        (await Cli.Exec("ip", ["netns", "exec", Netns, .. command])).Ok();

    public async ValueTask DisposeAsync()
    {
        await Capsule.Agent.Linux.Netns.KillAllAsync(Netns);
        await Capsule.Agent.Linux.Netns.DeleteAsync(Netns);
    }
}
