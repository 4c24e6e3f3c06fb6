using Capsule.Core;

namespace Capsule.Linux;

/// <summary>
/// One capsule's network: its own namespace holding only its locator on eth0, a veth to the
/// host, and a default route via the host. Nothing in the capsule names the host, so the same
/// plumbing rebuilt on another host looks identical from inside.
/// </summary>
internal static class CapsuleNetwork
{
    /// <summary>
    /// Host-side veth name, derived from the locator so it is unique on the host and short enough (15 chars).
    /// </summary>
    public static string HostIf(Locator l) => $"{HostNetwork.CapsuleIfPrefix}{l.Value:x8}";

    public static async Task CreateAsync(string netns, Locator locator, int mtu)
    {
        await BuildAsync(netns, locator, mtu);
        await AttachAsync(locator);
    }

    /// <summary>
    /// The namespace, its veth and its own addresses and routes; the host does not route to it yet.
    /// A migration target builds this ahead of time, but attaches only once the restored processes
    /// hold their sockets: a packet that reached the namespace before would meet no socket and be
    /// answered with a reset.
    /// </summary>
    public static async Task BuildAsync(string netns, Locator locator, int mtu)
    {
        var hostIf = HostIf(locator);
        var loc = locator.ToString();
        var m = mtu.ToString();
        await Netns.AddAsync(netns);
        await Netns.SysctlAsync(netns, "net.ipv6.conf.all.disable_ipv6", "1");
        await Netns.SysctlAsync(netns, "net.ipv6.conf.default.disable_ipv6", "1");
        await Cmd.TryIp(null, "link", "del", hostIf); // left over from a crash: start clean
        await Cmd.Ip(null, "link", "add", hostIf, "mtu", m, "type", "veth", "peer", "name", "eth0", "netns", netns);
        await Netns.SysctlAsync(null, $"net.ipv6.conf.{hostIf}.disable_ipv6", "1");
        await Cmd.Ip(null, "addr", "add", HostNetwork.CapsuleGateway + "/32", "dev", hostIf);
        await Cmd.Ip(null, "link", "set", hostIf, "up");
        await Cmd.Ip(netns, "addr", "add", loc + "/32", "dev", "eth0");
        await Cmd.Ip(netns, "link", "set", "eth0", "mtu", m, "up");
        await Cmd.Ip(netns, "route", "add", HostNetwork.CapsuleGateway, "dev", "eth0", "scope", "link");
        await Cmd.Ip(netns, "route", "add", "default", "via", HostNetwork.CapsuleGateway, "dev", "eth0");
    }

    /// <summary>The host routes the locator to the capsule's veth and lets the capsule send with it.</summary>
    public static async Task AttachAsync(Locator locator)
    {
        await AttachDeliveryAsync(locator);
        await AttachLocalAsync(locator);
    }

    /// <summary>What the data plane delivers reaches the capsule, and the capsule may send.</summary>
    public static async Task AttachDeliveryAsync(Locator locator)
    {
        var hostIf = HostIf(locator);
        await Cmd.Ip(null, "route", "replace", locator + "/32", "dev", hostIf, "table", HostNetwork.DeliveryTable);
        await HostNetwork.AllowAsync(hostIf, locator);
    }

    /// <summary>
    /// Capsules of this host reach it directly, veth to veth. A capsule that moves in while this
    /// host still holds its same-host peers' packets gets this only once they are flushed: new
    /// packets would otherwise overtake the held ones.
    /// </summary>
    public static Task AttachLocalAsync(Locator locator) =>
        Cmd.Ip(null, "route", "replace", locator + "/32", "dev", HostIf(locator));

    /// <summary>
    /// The host stops routing the locator to the veth (the capsule may still send): while a capsule
    /// moves, its same-host peers then reach it through the TUN, where the data plane holds them.
    /// What the data plane delivers still reaches it (<see cref="HostNetwork.DeliveryTable"/>).
    /// </summary>
    public static Task DetachAsync(Locator locator) =>
        Cmd.TryIp(null, "route", "del", locator + "/32", "dev", HostIf(locator));

    /// <summary>
    /// Nothing reaches the capsule's namespace any more, not even what the data plane delivers:
    /// done just before the freeze, because a namespace whose sockets CRIU has taken answers
    /// every segment with a reset. Packets that still come (sent before the cut but late, or by
    /// a host that was not asked to hold) then go from the TUN back into the TUN and wait in this
    /// host's own hold, to be flushed wherever the capsule ends up.
    /// </summary>
    public static async Task SealAsync(Locator locator)
    {
        await DetachAsync(locator);
        await Cmd.TryIp(null, "route", "del", locator + "/32", "dev", HostIf(locator),
            "table", HostNetwork.DeliveryTable);
    }

    /// <summary>Removes everything <see cref="CreateAsync"/> made; safe on a half-built capsule.</summary>
    public static async Task DestroyAsync(string netns, Locator locator)
    {
        var hostIf = HostIf(locator);
        await HostNetwork.RevokeAsync(hostIf, locator);
        await Cmd.TryIp(null, "route", "del", locator + "/32", "dev", hostIf);
        await Cmd.TryIp(null, "link", "del", hostIf);
        await Netns.KillAllAsync(netns);
        await Netns.DeleteAsync(netns);
    }
}
