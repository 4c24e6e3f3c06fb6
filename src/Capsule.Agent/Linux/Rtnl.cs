using System.Net;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// The few rtnetlink requests a capsule's plumbing needs, each the exact equivalent of one `ip`
/// command (named beside it), sent over a <see cref="Netlink"/> socket instead of through a new
/// process: creating a capsule went from sixteen process spawns to one.
/// </summary>
internal static class Rtnl
{
    const ushort RTM_NEWLINK = 16, RTM_DELLINK = 17, RTM_NEWADDR = 20, RTM_NEWROUTE = 24, RTM_DELROUTE = 25;
    const ushort IFLA_IFNAME = 3, IFLA_MTU = 4, IFLA_LINKINFO = 18, IFLA_NET_NS_FD = 28;
    const ushort IFLA_INFO_KIND = 1, IFLA_INFO_DATA = 2, VETH_INFO_PEER = 1;
    const ushort IFA_ADDRESS = 1, IFA_LOCAL = 2;
    const ushort RTA_DST = 1, RTA_OIF = 4, RTA_GATEWAY = 5, RTA_TABLE = 15;
    const uint IFF_UP = 1;
    const byte RT_TABLE_UNSPEC = 0, RTPROT_BOOT = 3, RTN_UNICAST = 1;
    public const uint MainTable = 254;
    public const byte ScopeUniverse = 0, ScopeLink = 253;
    const byte ScopeNowhere = 255;

    /// <summary>`ip link add NAME mtu MTU type veth peer name PEER mtu MTU [netns NETNS]`.</summary>
    /// <param name="peerNetns">Where the peer goes; null: it stays beside NAME.</param>
    public static void AddVeth(Netlink nl, string name, int mtu, string peer, string? peerNetns)
    {
        var fd = -1;
        if (peerNetns is not null)
        {
            fd = Native.open(Path.Combine(Netns.Dir, peerNetns), Native.O_RDONLY | Native.O_CLOEXEC);
            if (fd < 0) throw Native.Failed($"open network namespace {peerNetns}", Native.Errno);
        }
        try
        {
            var m = new NetlinkMessage(RTM_NEWLINK, NetlinkMessage.NLM_F_CREATE | NetlinkMessage.NLM_F_EXCL)
                .IfInfo().Str(IFLA_IFNAME, name).U32(IFLA_MTU, (uint)mtu)
                .Nest(IFLA_LINKINFO, li => li.Str(IFLA_INFO_KIND, "veth")
                    .Nest(IFLA_INFO_DATA, d => d.Nest(VETH_INFO_PEER, p =>
                    {
                        p.IfInfo().Str(IFLA_IFNAME, peer).U32(IFLA_MTU, (uint)mtu);
                        if (fd >= 0) p.U32(IFLA_NET_NS_FD, (uint)fd);
                    })));
            nl.Request(m, $"add veth {name} with peer {peer}" + (peerNetns is null ? "" : $" in {peerNetns}"));
        }
        finally
        {
            if (fd >= 0) Native.close(fd);
        }
    }

    /// <summary>`ip link set NAME up`.</summary>
    public static void SetUp(Netlink nl, string name) =>
        nl.Request(new NetlinkMessage(RTM_NEWLINK, 0).IfInfo(0, IFF_UP, IFF_UP).Str(IFLA_IFNAME, name),
            $"set link {name} up");

    /// <summary>`ip link del NAME`; false when there was no such link.</summary>
    public static bool DeleteLink(Netlink nl, string name) =>
        nl.Request(new NetlinkMessage(RTM_DELLINK, 0).IfInfo().Str(IFLA_IFNAME, name), $"delete link {name}",
            Native.ENODEV) == 0;

    /// <summary>`ip addr add ADDRESS/32 dev DEV`.</summary>
    public static void AddHostAddress(Netlink nl, string dev, IPAddress address)
    {
        var m = new NetlinkMessage(RTM_NEWADDR, NetlinkMessage.NLM_F_CREATE | NetlinkMessage.NLM_F_EXCL)
            .IfAddr(nl.IndexOf(dev), 32).Ipv4(IFA_LOCAL, address).Ipv4(IFA_ADDRESS, address);
        nl.Request(m, $"add address {address}/32 to {dev}");
    }

    /// <summary>
    /// `ip route add|replace DST/LEN [via GW] dev DEV [table T]`: scope link without a gateway, as ip does.
    /// </summary>
    public static void AddRoute(Netlink nl, bool replace, IPAddress dst, byte length, string dev,
        uint table = MainTable, IPAddress? via = null)
    {
        var flags = (ushort)(NetlinkMessage.NLM_F_CREATE
            | (replace ? NetlinkMessage.NLM_F_REPLACE : NetlinkMessage.NLM_F_EXCL));
        var m = new NetlinkMessage(RTM_NEWROUTE, flags)
            .Rt(length, TableByte(table), RTPROT_BOOT, via is null ? ScopeLink : ScopeUniverse, RTN_UNICAST)
            .U32(RTA_TABLE, table).U32(RTA_OIF, (uint)nl.IndexOf(dev));
        if (length > 0) m.Ipv4(RTA_DST, dst);
        if (via is not null) m.Ipv4(RTA_GATEWAY, via);
        nl.Request(m, $"{(replace ? "replace" : "add")} route {dst}/{length}{(via is null ? "" : " via " + via)} " +
            $"dev {dev} table {table}");
    }

    /// <summary>`ip route del DST/32 dev DEV [table T]`; false when there was no such route (or device).</summary>
    public static bool DeleteRoute(Netlink nl, IPAddress dst, string dev, uint table = MainTable)
    {
        int index;
        try { index = nl.IndexOf(dev); }
        catch (CommandFailedException) { return false; } // the device is gone, and its routes with it
        var m = new NetlinkMessage(RTM_DELROUTE, 0).Rt(32, TableByte(table), 0, ScopeNowhere, 0)
            .U32(RTA_TABLE, table).U32(RTA_OIF, (uint)index).Ipv4(RTA_DST, dst);
        return nl.Request(m, $"delete route {dst}/32 dev {dev} table {table}", Native.ESRCH) == 0;
    }

    // rtm_table is one byte: a table past 255 goes in RTA_TABLE alone.
    static byte TableByte(uint table) => table < 256 ? (byte)table : RT_TABLE_UNSPEC;
}
