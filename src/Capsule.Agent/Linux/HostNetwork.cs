using System.Text.Json;
using Capsule.Core;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// The host side of the plumbing, in the agent's own network namespace: forwarding on, the locator
/// pool routed into the TUN, and an nftables table that keeps capsules honest (a capsule sends only
/// with its own locator, and reaches neither the host nor the underlay directly).
/// </summary>
internal static class HostNetwork
{
    public const string Table = "capsule";
    /// <summary>Prefix of host-side capsule veth names; the nft rules match on it.</summary>
    public const string CapsuleIfPrefix = "cv";
    /// <summary>
    /// The capsule's next hop: every host-side capsule veth carries it, so a capsule's routes never name a host.
    /// </summary>
    public const string CapsuleGateway = "169.254.1.1";
    /// <summary>
    /// Routing table for packets the agent delivers (they come in through the TUN). It keeps every
    /// local capsule's route even while a migration has taken it out of the main table: packets
    /// sent before the cut still reach the capsule, while same-host peers' packets (main table)
    /// go to the TUN and are held.
    /// </summary>
    public const string DeliveryTable = "7470";

    /// <summary>
    /// Sets the host up for the overlay. <paramref name="underlay"/> is this host's address between hosts;
    /// <paramref name="servedFrom"/> a gateway's address on the ordinary hosts' side (none elsewhere).
    /// </summary>
    public static async Task SetupAsync(string tun, Prefix pool, int innerMtu, Locator underlay,
        Locator? servedFrom = null)
    {
        var underlayIf = await InterfaceOfAsync(underlay) ?? throw new InvalidOperationException(
            $"no interface of this host has the underlay address {underlay}: set Underlay to one of its addresses");
        var servedIf = servedFrom is { } s ? await InterfaceOfAsync(s) : null;
        await Netns.SysctlAsync(null, "net.ipv4.ip_forward", "1");
        // Capsule packets arrive on the TUN with remote sources and on veths with local ones; the
        // routing is symmetric but loose filtering is what the overlay needs, and nft does the
        // strict per-capsule source check below.
        await Netns.SysctlAsync(null, "net.ipv4.conf.all.rp_filter", "0");
        await Netns.SysctlAsync(null, "net.ipv4.conf.default.rp_filter", "0");
        // On the underlay, where outsiders are, strict reverse-path filtering (the kernel uses the larger of
        // `all` and the interface's value): a source that would not be routed back out the underlay, such as
        // an ordinary host's address behind a gateway forged by a machine on the underlay, is refused.
        await Netns.SysctlAsync(null, $"net.ipv4.conf.{underlayIf}.rp_filter", "1");
        // The TUN's queue absorbs a TCP sender's bursts while the one egress thread drains it;
        // at the default 500 it overflowed under a single iperf3 stream (thousands of drops, each
        // one a retransmission), so it is sized for bursts of a few milliseconds at line rate.
        // At most 64 segments per super-packet: what one batch of the data plane cuts (Engine.BatchSize).
        await Cmd.Ip(null, "link", "set", tun, "mtu", innerMtu.ToString(), "txqueuelen", "10000", "gso_max_segs",
            "64", "up");
        await Cmd.Ip(null, "route", "replace", pool.ToString(), "dev", tun);
        // A packet for a sealed (frozen) capsule goes from the TUN back into it, to be held; the
        // kernel would answer each with an ICMP redirect, which no one needs.
        await Netns.SysctlAsync(null, $"net.ipv4.conf.{tun}.send_redirects", "0");
        await Netns.SysctlAsync(null, "net.ipv4.conf.all.send_redirects", "0");
        await Cmd.TryIp(null, "rule", "del", "iif", tun, "lookup", DeliveryTable);
        await Cmd.Ip(null, "rule", "add", "iif", tun, "lookup", DeliveryTable, "priority", "1000");
        await Cmd.RunAsync("nft", ["-f", "-"], stdin: Ruleset(tun, pool, underlayIf, servedIf));
    }

    /// <summary>The interface that holds <paramref name="address"/>, from `ip -j` (JSON), or null.</summary>
    static async Task<string?> InterfaceOfAsync(Locator address)
    {
        var json = await Cmd.RunAsync("ip", ["-j", "-4", "addr", "show", "to", address + "/32"]);
        using var doc = JsonDocument.Parse(json.Length == 0 ? "[]" : json);
        foreach (var link in doc.RootElement.EnumerateArray())
            if (link.TryGetProperty("ifname", out var name) && name.GetString() is { Length: > 0 } n) return n;
        return null;
    }

    // The whole table is replaced at once (`delete` of a missing table is tolerated by `add` first),
    // so an agent restart never stacks a second copy of the rules.
    // pool_from_underlay: a packet for a capsule that arrives on the underlay as itself, not inside an overlay
    // datagram, comes from no agent: anyone on the underlay could inject it. served_to_underlay: a gateway
    // carries its ordinary hosts' traffic into the overlay (the TUN) only, never onto other networks.
    // dns: a capsule's DNS, to whichever nameserver its resolv.conf names, is answered by this host's agent
    // on the capsules' next hop (Dns/CapsuleDnsServer.cs); the only thing on the host a capsule reaches. A
    // query to another capsule (a locator: it may serve DNS itself) goes on to it untouched. The DNAT needs
    // connection tracking, and a nat chain turns it on for every packet of the host: only those queries and the
    // agent's answers to them are tracked (notrack in the raw chains), so the data plane carries no
    // conntrack state or cost.
    static string Ruleset(string tun, Prefix pool, string underlayIf, string? servedIf)
    {
        var leavesOverlay = $"oifname != \"{tun}\" oifname != \"{CapsuleIfPrefix}*\"";
        var servedRule = servedIf is null
            ? ""
            : $"iifname \"{servedIf}\" oifname != \"{tun}\" counter name served_to_underlay drop";
        return $$"""
        add table ip {{Table}}
        delete table ip {{Table}}
        table ip {{Table}} {
          set locators { type ifname . ipv4_addr; }
          counter spoofed_source {}
          counter capsule_to_host {}
          counter capsule_to_underlay {}
          counter pool_from_underlay {}
          counter served_to_underlay {}
          chain prerouting {
            type filter hook prerouting priority raw; policy accept;
            iifname "{{CapsuleIfPrefix}}*" iifname . ip saddr != @locators counter name spoofed_source drop
            iifname "{{underlayIf}}" ip daddr {{pool}} counter name pool_from_underlay drop
            iifname "{{CapsuleIfPrefix}}*" ip daddr != {{pool}} udp dport 53 accept
            notrack
          }
          chain output {
            type filter hook output priority raw; policy accept;
            ip saddr {{CapsuleGateway}} udp sport 53 accept
            notrack
          }
          chain dns {
            type nat hook prerouting priority dstnat; policy accept;
            iifname "{{CapsuleIfPrefix}}*" ip daddr != {{pool}} udp dport 53 dnat to {{CapsuleGateway}}
          }
          chain input {
            type filter hook input priority filter; policy accept;
            iifname "{{CapsuleIfPrefix}}*" ip daddr {{CapsuleGateway}} udp dport 53 accept
            iifname "{{CapsuleIfPrefix}}*" counter name capsule_to_host drop
          }
          chain forward {
            type filter hook forward priority filter; policy accept;
            iifname "{{CapsuleIfPrefix}}*" {{leavesOverlay}} counter name capsule_to_underlay drop
            {{servedRule}}
          }
        }
        """;
    }

    public static Task AllowAsync(string hostIf, Locator locator) =>
        Cmd.RunAsync("nft", ["add", "element", "ip", Table, "locators", $"{{ \"{hostIf}\" . {locator} }}"]);

    public static Task RevokeAsync(string hostIf, Locator locator) =>
        Cmd.TryRunAsync("nft", ["delete", "element", "ip", Table, "locators", $"{{ \"{hostIf}\" . {locator} }}"]);

    /// <summary>
    /// Undoes <see cref="SetupAsync"/>; with <paramref name="keepFilter"/> the nftables table stays, for
    /// capsules that run on without an agent (the next agent's set-up replaces it whole).
    /// </summary>
    public static async Task TeardownAsync(string tun, Prefix pool, bool keepFilter = false)
    {
        await Cmd.TryIp(null, "route", "del", pool.ToString(), "dev", tun);
        await Cmd.TryIp(null, "rule", "del", "iif", tun, "lookup", DeliveryTable);
        if (!keepFilter) await Cmd.TryRunAsync("nft", ["delete", "table", "ip", Table]);
    }

    /// <summary>
    /// The kernel-side drop counters of the table above, by name (`nft list counters table ip capsule`),
    /// read over netlink: `capsule stats` answers without starting nft. None when they cannot be read
    /// (no table yet): the counters are extra detail, never a reason for stats to fail.
    /// </summary>
    public static Task<Dictionary<string, long>> CountersAsync()
    {
        try { return Task.FromResult(NftCounters.Read(Table)); }
        catch (CommandFailedException) { return Task.FromResult(new Dictionary<string, long>()); }
    }
}
