using Capsule.Agent.DataPlane;
using Capsule.Core;
using Capsule.Protos;

namespace Capsule.Agent.Migration;

/// <summary>One holder's release in a move: its host (underlay), its reply, and whether it flushed somewhere.</summary>
internal sealed record HolderReport(Locator Holder, ReleaseReply Reply, bool Flushed);

/// <summary>
/// The per-connection report of a move (issue 14, item 3): each TCP and UDP socket the capsule had before the sync,
/// joined with what the holds had of its peer's packets when they were released and with the sockets the restored
/// capsule has on the target.
/// </summary>
internal static class FlowReports
{
    /// <summary>A holder's answer to a release: its counts, how long it held, and what it had of each flow.</summary>
    public static ReleaseReply Reply(long flushed, long dropped, HoldContents? held)
    {
        var reply = new ReleaseReply { Flushed = flushed, Dropped = dropped };
        if (held is null) return reply;
        reply.HeldMs = (long)held.HeldFor.TotalMilliseconds;
        foreach (var f in held.Flows)
            reply.Flows.Add(new HeldFlow
            {
                Protocol = f.Tcp ? "tcp" : "udp", Peer = $"{f.Peer}:{f.PeerPort}",
                Local = $"{f.Capsule}:{f.CapsulePort}",
                Packets = f.Packets, Paused = f.Paused,
            });
        return reply;
    }

    /// <param name="before">The capsule's sockets before the sync (<see cref="CapsuleSockets"/>).</param>
    /// <param name="holders">Each holder's release.</param>
    /// <param name="after">The restored capsule's sockets.</param>
    /// <param name="hostOf">A holder's host name by its underlay address.</param>
    public static List<FlowReport> Build(IEnumerable<FlowReport> before, IEnumerable<HolderReport> holders,
        IEnumerable<FlowReport> after, Func<Locator, string> hostOf)
    {
        var held = holders.SelectMany(h => h.Reply.Flows.Select(f => (Holder: h, Flow: f))).ToList();
        var restored = after.ToList();
        var report = new List<FlowReport>();
        foreach (var s in before)
        {
            var port = PortOf(s.Local);
            var mine = held.Where(x => x.Flow.Protocol == s.Protocol && PortOf(x.Flow.Local) == port
                && (s.Peer == "*" || x.Flow.Peer == s.Peer)).ToList();
            if (mine.Count == 0)
            {
                report.Add(Joined(s, s.Peer, [], restored, hostOf));
                continue;
            }
            // An unconnected UDP socket hears from several peers: one line each.
            foreach (var peer in mine.GroupBy(x => x.Flow.Peer))
                report.Add(Joined(s, peer.Key, [.. peer], restored, hostOf));
        }
        return report;
    }

    static FlowReport Joined(FlowReport s, string peer, List<(HolderReport Holder, HeldFlow Flow)> held,
        List<FlowReport> restored, Func<Locator, string> hostOf)
    {
        var r = s.Clone();
        r.Peer = peer;
        r.Held = held.Sum(x => x.Flow.Packets);
        r.Flushed = held.Where(x => x.Holder.Flushed).Sum(x => x.Flow.Packets);
        r.Paused = held.Any(x => x.Flow.Paused);
        r.StallMs = held.Count == 0 ? 0 : held.Max(x => x.Holder.Reply.HeldMs);
        r.Holder = string.Join(",", held.Select(x => hostOf(x.Holder.Holder)).Distinct());
        r.Survived = restored.Any(x => x.Protocol == s.Protocol && x.Local == s.Local && x.Peer == s.Peer
            && x.State == s.State);
        return r;
    }

    static string PortOf(string endpoint) => endpoint[(endpoint.LastIndexOf(':') + 1)..];
}
