using System.Buffers.Binary;
using System.Text;

namespace Capsule.Agent.Linux;

/// <summary>
/// `nft list counters table ip TABLE` over nfnetlink: one dump of the table's named counter objects,
/// read in-process instead of starting nft (which also loads the whole ruleset first).
/// </summary>
internal static class NftCounters
{
    const int NETLINK_NETFILTER = 12;
    const ushort NFNL_SUBSYS_NFTABLES = 10;
    const ushort NFT_MSG_NEWOBJ = NFNL_SUBSYS_NFTABLES << 8 | 18, NFT_MSG_GETOBJ = NFNL_SUBSYS_NFTABLES << 8 | 19;
    const ushort NFTA_OBJ_TABLE = 1, NFTA_OBJ_NAME = 2, NFTA_OBJ_TYPE = 3, NFTA_OBJ_DATA = 4;
    const ushort NFTA_COUNTER_PACKETS = 2;
    const uint NFT_OBJECT_COUNTER = 1;
    const byte NFPROTO_IPV4 = 2;
    /// <summary>The netlink header (16 bytes) and nfgenmsg (4) come before a message's attributes.</summary>
    const int AttrsAt = 20;

    /// <summary>Packets counted by each named counter of table ip <paramref name="table"/>.</summary>
    public static Dictionary<string, long> Read(string table)
    {
        var result = new Dictionary<string, long>();
        using var nl = Netlink.Open("host", NETLINK_NETFILTER);
        var m = new NetlinkMessage(NFT_MSG_GETOBJ, 0).NfGen(NFPROTO_IPV4)
            .Str(NFTA_OBJ_TABLE, table).U32BE(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER);
        nl.Dump(m, $"list the counters of nft table ip {table}", (type, msg) =>
        {
            if (type != NFT_MSG_NEWOBJ || msg.Length < AttrsAt) return;
            string? name = null;
            string? inTable = null;
            long? packets = null;
            Netlink.Attrs(msg[AttrsAt..], (t, p) =>
            {
                if (t == NFTA_OBJ_NAME) name = Text(p);
                else if (t == NFTA_OBJ_TABLE) inTable = Text(p);
                else if (t == NFTA_OBJ_DATA)
                    Netlink.Attrs(p, (ct, cp) =>
                    {
                        if (ct == NFTA_COUNTER_PACKETS && cp.Length >= 8)
                            packets = (long)BinaryPrimitives.ReadUInt64BigEndian(cp);
                    });
            });
            // The kernel filters by table; checked again so an older one's unfiltered dump reads right too.
            if (name is not null && inTable == table && packets is { } n) result[name] = n;
        }, Native.ENOENT);
        return result;
    }

    static string Text(ReadOnlySpan<byte> p) => Encoding.ASCII.GetString(p.TrimEnd((byte)0));
}
