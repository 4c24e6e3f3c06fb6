using System.Collections.Frozen;
using System.Runtime.CompilerServices;

namespace Capsule.Core;

/// <summary>
/// The seed's translation table (Fig. 8) as seen by one host: capsule locator → host underlay
/// address, which locators are local, and which underlay addresses are known hosts. Immutable: the
/// agent makes a new one for each directory change and publishes it with one reference write, so
/// the data plane reads it lock-free, once per batch. A capsule's change costs O(change), not
/// O(capsules): see <see cref="With"/> (TranslationTable.Changes.cs).
/// </summary>
public sealed partial class TranslationTable
{
    public static readonly TranslationTable Empty = new(Locator.None, 0, FrozenDictionary<uint, uint>.Empty,
        FrozenSet<uint>.Empty, FrozenSet<uint>.Empty, [], []);

    readonly FrozenDictionary<uint, uint> _hostOf;
    readonly FrozenSet<uint> _local;
    readonly FrozenSet<uint> _hosts;
    // Ordinary networks behind gateways: few (one per gateway, typically), so a linear scan.
    readonly (Prefix Net, uint Host)[] _routes;
    readonly Prefix[] _served;

    public Locator Self { get; }
    public uint Epoch { get; }
    /// <summary>Remote capsules routed (of the last full build; changes since are in the overlay).</summary>
    public int Count => _hostOf.Count;
    /// <summary>This host is a gateway: it answers for unknown locators as a router would.</summary>
    public bool IsGateway => _served.Length > 0;

    TranslationTable(Locator self, uint epoch, FrozenDictionary<uint, uint> hostOf, FrozenSet<uint> local,
        FrozenSet<uint> hosts, (Prefix, uint)[] routes, Prefix[] served)
    {
        Self = self;
        Epoch = epoch;
        _hostOf = hostOf;
        _local = local;
        _hosts = hosts;
        _routes = routes;
        _served = served;
    }

    /// <summary>
    /// Builds the table for host <paramref name="self"/> from a directory state. <paramref name="pins"/>
    /// (locator → host underlay address) win over the directory: a migration sets them so that the
    /// new route is in force on the hosts that flush to it before the directory change reaches them.
    /// A pin to this host's own address makes the locator local.
    /// </summary>
    public static TranslationTable From(DirectoryState state, string self,
        IReadOnlyDictionary<Locator, Locator>? pins = null)
    {
        var selfAddr = state.Hosts.TryGetValue(self, out var me) ? me.Underlay : Locator.None;
        var hostOf = new Dictionary<uint, uint>();
        var local = new HashSet<uint>();
        foreach (var c in state.Capsules.Values)
        {
            // Only capsules that run somewhere route: a creating, migrating or suspended capsule's
            // packets have no live destination yet.
            if (c.State != CapsuleState.Running || !state.Hosts.TryGetValue(c.Host, out var h)) continue;
            if (c.Host == self) local.Add(c.Locator.Value);
            else hostOf[c.Locator.Value] = h.Underlay.Value;
        }
        if (pins is not null)
            foreach (var (loc, host) in pins)
            {
                if (host == selfAddr)
                {
                    local.Add(loc.Value);
                    hostOf.Remove(loc.Value);
                }
                else
                {
                    hostOf[loc.Value] = host.Value;
                    local.Remove(loc.Value);
                }
            }
        var hosts = new HashSet<uint>();
        var routes = new List<(Prefix, uint)>();
        foreach (var h in state.Hosts.Values)
        {
            if (h.Name == self) continue;
            hosts.Add(h.Underlay.Value);
            foreach (var p in h.ServedPrefixes) routes.Add((p, h.Underlay.Value));
        }
        var served = me is null ? [] : me.ServedPrefixes.ToArray();
        return new TranslationTable(selfAddr, unchecked((uint)state.Revision), hostOf.ToFrozenDictionary(),
            local.ToFrozenSet(), hosts.ToFrozenSet(), [.. routes], served);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsLocal(Locator l) =>
        _overlay.Count != 0 && _overlay.TryGetValue(l.Value, out var e) ? e.Local : _local.Contains(l.Value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsKnownHost(Locator underlay) => _hosts.Contains(underlay.Value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetHost(Locator capsule, out Locator host)
    {
        if (TryRemote(capsule.Value, out var h))
        {
            host = new(h);
            return true;
        }
        host = default;
        return false;
    }

    /// <summary>
    /// The host to send to for <paramref name="dst"/>: its capsule's host, else the gateway serving its network.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRoute(Locator dst, out Locator host)
    {
        if (TryRemote(dst.Value, out var h))
        {
            host = new(h);
            return true;
        }
        foreach (var (net, gw) in _routes)
            if (net.Contains(dst))
            {
                host = new(gw);
                return true;
            }
        host = default;
        return false;
    }

    /// <summary>The overlay first (changes since the last full build), then the frozen map.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    bool TryRemote(uint locator, out uint host)
    {
        if (_overlay.Count != 0 && _overlay.TryGetValue(locator, out var e))
        {
            host = e.Host;
            return e.Host != 0;
        }
        return _hostOf.TryGetValue(locator, out host);
    }

    /// <summary>An address in an ordinary network this host (a gateway) serves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Serves(Locator a)
    {
        foreach (var p in _served)
            if (p.Contains(a)) return true;
        return false;
    }
}

/// <summary>
/// The per-packet decisions of the data plane, pure so they are tested without a kernel.
/// Outbound: a packet a local capsule sent that the kernel routed to the TUN. Inbound: a datagram
/// another host's agent sent us.
/// </summary>
public static class Forwarding
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static DropReason Outbound(TranslationTable t, ReadOnlySpan<byte> packet, out Locator toHost)
    {
        toHost = default;
        if (!Ipv4.IsValid(packet)) return DropReason.BadInnerPacket;
        var src = Ipv4.Source(packet);
        if (!t.IsLocal(src) && !t.Serves(src)) return DropReason.SpoofedSource;
        return t.TryRoute(Ipv4.Destination(packet), out toHost) ? DropReason.None : DropReason.NoRoute;
    }

    /// <summary>
    /// Checks a received datagram once its tag verified and was cut off (its payload plain: see <see cref="Aead"/>);
    /// on success <paramref name="inner"/> is the packet to deliver.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static DropReason Inbound(TranslationTable t, Locator fromHost, ReadOnlySpan<byte> datagram, out Range inner)
    {
        inner = default;
        // Who sent it is checked before anything in it is believed.
        if (!t.IsKnownHost(fromHost)) return DropReason.UnknownHost;
        var r = Wire.TryReadHeader(datagram, out _, out _);
        if (r != DropReason.None) return r;
        var p = datagram[Wire.HeaderSize..];
        if (!Ipv4.IsValid(p)) return DropReason.BadInnerPacket;
        var dst = Ipv4.Destination(p);
        if (!t.IsLocal(dst) && !t.Serves(dst)) return DropReason.NotLocalCapsule;
        // The source must be a capsule on the sending host, or an address behind it if it is a gateway.
        if (!t.TryRoute(Ipv4.Source(p), out var srcHost) || srcHost != fromHost) return DropReason.SourceHostMismatch;
        inner = Wire.HeaderSize..datagram.Length;
        return DropReason.None;
    }
}
