using System.Collections.Immutable;

namespace Capsule.Core;

/// <summary>
/// Directory changes applied one by one. The frozen maps of the last full build stay; what changed
/// since goes in a small immutable overlay the lookups read first. A change of a capsule costs
/// O(log overlay) and shares everything else with the table before it. When the overlay grows past
/// an eighth of the table, the next change builds afresh: O(capsules) once every n/8 changes, so
/// O(1) per change on average, and lookups stay on a frozen map.
/// </summary>
public sealed partial class TranslationTable
{
    /// <summary>A changed locator: remote at <see cref="Host"/>, local, or gone (neither).</summary>
    readonly record struct Entry(uint Host, bool Local);

    const int MinOverlay = 64;

    readonly ImmutableDictionary<uint, Entry> _overlay = ImmutableDictionary<uint, Entry>.Empty;

    TranslationTable(TranslationTable basis, uint epoch, ImmutableDictionary<uint, Entry> overlay)
        : this(basis.Self, epoch, basis._hostOf, basis._local, basis._hosts, basis._routes, basis._served)
    {
        _overlay = overlay;
    }

    /// <summary>Changes since the last full build that lookups read first.</summary>
    public int Pending => _overlay.Count;

    /// <summary>
    /// This table with <paramref name="changes"/> applied; <paramref name="state"/> is the directory
    /// after them. A host's change (rare: hosts join, leave, change what they serve) builds afresh.
    /// A pinned locator keeps its pin (see <see cref="From"/>): the directory has not caught up yet.
    /// </summary>
    public TranslationTable With(DirectoryState state, IReadOnlyList<DirectoryChange> changes, string self,
        IReadOnlyDictionary<Locator, Locator>? pins = null)
    {
        var overlay = _overlay;
        foreach (var change in changes)
        {
            if (change.Capsule is not { } c) return From(state, self, pins);
            if (pins is not null && pins.ContainsKey(c.Locator)) continue;
            overlay = overlay.SetItem(c.Locator.Value, EntryFor(state, c, change.Kind, self));
        }
        if (overlay.Count > Math.Max(MinOverlay, (_hostOf.Count + _local.Count) / 8)) return From(state, self, pins);
        return new TranslationTable(this, unchecked((uint)state.Revision), overlay);
    }

    static Entry EntryFor(DirectoryState state, CapsuleRecord c, ChangeKind kind, string self)
    {
        // As in From: only a capsule that runs on a known host routes.
        if (kind == ChangeKind.CapsuleDeleted || c.State != CapsuleState.Running
            || !state.Hosts.TryGetValue(c.Host, out var h))
            return default;
        return c.Host == self ? new Entry(0, true) : new Entry(h.Underlay.Value, false);
    }
}
