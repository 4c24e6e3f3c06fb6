using System.Net;
using Capsule.Core;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

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

    /// <param name="ofPid">A capsule with its own user namespace: the network namespace its first
    /// process made (it must own it), not a new one.</param>
    public static async Task CreateAsync(string netns, Locator locator, int mtu, int ofPid = 0)
    {
        await BuildAsync(netns, locator, mtu, ofPid);
        await AttachAsync(locator);
    }

    static readonly IPAddress Gateway = IPAddress.Parse(HostNetwork.CapsuleGateway);
    static readonly uint DeliveryTable = uint.Parse(HostNetwork.DeliveryTable);

    /// <summary>
    /// The namespace, its veth and its own addresses and routes; the host does not route to it yet.
    /// A migration target builds this ahead of time, but attaches only once the restored processes
    /// hold their sockets: a packet that reached the namespace before would meet no socket and be
    /// answered with a reset. All of it over netlink, in this process: no `ip` per step.
    /// </summary>
    public static Task BuildAsync(string netns, Locator locator, int mtu, int ofPid = 0) => Now(() =>
    {
        var hostIf = HostIf(locator);
        using var inside = Netns.Create(netns, ofPid,
            ("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1"));
        using var host = Netlink.Open("host");
        Rtnl.DeleteLink(host, hostIf); // left over from a crash: start clean
        Rtnl.AddVeth(host, hostIf, mtu, "eth0", netns);
        ConfigureHostEnd(host, hostIf);
        Rtnl.AddHostAddress(inside, "eth0", locator.ToAddress());
        Rtnl.SetUp(inside, "eth0");
        Rtnl.AddRoute(inside, replace: false, Gateway, 32, "eth0");
        Rtnl.AddRoute(inside, replace: false, IPAddress.Any, 0, "eth0", via: Gateway);
    });

    /// <summary>
    /// Before CRIU restores a capsule with its own user namespace: its veth, both ends on the host.
    /// CRIU restores the capsule's network namespace from the image and moves the returned end into
    /// it as eth0 (--external netdev[eth0]:END), where it gets its address and routes back from the
    /// image. (CRIU's own veth[eth0] external is refused here by the kernel: "Operation not supported".)
    /// </summary>
    public static Task<string> PairForRestoreAsync(Locator locator, int mtu)
    {
        var hostIf = HostIf(locator);
        var inner = $"{HostNetwork.CapsuleIfPrefix}i{locator.Value:x8}";
        return Now(() =>
        {
            using var host = Netlink.Open("host");
            Rtnl.DeleteLink(host, hostIf); // left over from a crash: start clean
            Rtnl.AddVeth(host, hostIf, mtu, inner, peerNetns: null);
            return inner;
        });
    }

    /// <summary>
    /// After that restore: the namespace gets its name here, and the veth's host end what
    /// <see cref="BuildAsync"/> gives it. Not yet routed to, as there.
    /// </summary>
    public static Task AdoptAsync(string netns, Locator locator, int pid) => Now(() =>
    {
        using (Netns.Create(netns, pid)) { }
        using var host = Netlink.Open("host");
        ConfigureHostEnd(host, HostIf(locator));
    });

    static void ConfigureHostEnd(Netlink host, string hostIf)
    {
        Netns.WriteSysctl($"net.ipv6.conf.{hostIf}.disable_ipv6", "1");
        Rtnl.AddHostAddress(host, hostIf, Gateway);
        Rtnl.SetUp(host, hostIf);
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
        await Now(() => WithHost(h => Rtnl.AddRoute(h, replace: true, locator.ToAddress(), 32, hostIf, DeliveryTable)));
        await HostNetwork.AllowAsync(hostIf, locator);
    }

    /// <summary>
    /// Capsules of this host reach it directly, veth to veth. A capsule that moves in while this
    /// host still holds its same-host peers' packets gets this only once they are flushed: new
    /// packets would otherwise overtake the held ones.
    /// </summary>
    public static Task AttachLocalAsync(Locator locator) =>
        Now(() => WithHost(h => Rtnl.AddRoute(h, replace: true, locator.ToAddress(), 32, HostIf(locator))));

    /// <summary>
    /// The host stops routing the locator to the veth (the capsule may still send): while a capsule
    /// moves, its same-host peers then reach it through the TUN, where the data plane holds them.
    /// What the data plane delivers still reaches it (<see cref="HostNetwork.DeliveryTable"/>).
    /// </summary>
    public static Task DetachAsync(Locator locator) =>
        Now(() => WithHost(h => Rtnl.DeleteRoute(h, locator.ToAddress(), HostIf(locator))));

    /// <summary>
    /// Nothing reaches the capsule's namespace any more, not even what the data plane delivers:
    /// done just before the freeze, because a namespace whose sockets CRIU has taken answers
    /// every segment with a reset. Packets that still come (sent before the cut but late, or by
    /// a host that was not asked to hold) then go from the TUN back into the TUN and wait in this
    /// host's own hold, to be flushed wherever the capsule ends up.
    /// </summary>
    public static Task SealAsync(Locator locator) => Now(() => WithHost(h =>
    {
        Rtnl.DeleteRoute(h, locator.ToAddress(), HostIf(locator));
        Rtnl.DeleteRoute(h, locator.ToAddress(), HostIf(locator), DeliveryTable);
    }));

    /// <summary>Removes everything <see cref="CreateAsync"/> made; safe on a half-built capsule.</summary>
    public static async Task DestroyAsync(string netns, Locator locator)
    {
        var hostIf = HostIf(locator);
        await HostNetwork.RevokeAsync(hostIf, locator);
        try
        {
            await Now(() => WithHost(h =>
            {
                Rtnl.DeleteRoute(h, locator.ToAddress(), hostIf);
                Rtnl.DeleteLink(h, hostIf);
            }));
        }
        // Tidying goes on, as it did when these were `ip ... del` allowed to fail: removing the
        // namespace below takes the veth pair (and so its routes) with it anyway.
        catch (CommandFailedException) { }
        await Netns.KillAllAsync(netns);
        await Netns.DeleteAsync(netns);
    }

    static void WithHost(Action<Netlink> f)
    {
        using var host = Netlink.Open("host");
        f(host);
    }

    /// <summary>
    /// Runs netlink work (a few system calls, no waiting on anything slow) at once, its failure in the task
    /// as an async method would have it.
    /// </summary>
    static Task<T> Now<T>(Func<T> f)
    {
        try
        {
            return Task.FromResult(f());
        }
        catch (Exception e)
        {
            return Task.FromException<T>(e);
        }
    }

    static Task Now(Action f)
    {
        try
        {
            f();
            return Task.CompletedTask;
        }
        catch (Exception e)
        {
            return Task.FromException(e);
        }
    }
}
