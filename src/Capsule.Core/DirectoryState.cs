using System.Collections.Immutable;

namespace Capsule.Core;

/// <summary>What changed in the directory; agents apply these to their translation tables.</summary>
public enum ChangeKind { HostPut, HostDeleted, CapsulePut, CapsuleDeleted }

public sealed record DirectoryChange(long Revision, ChangeKind Kind, HostRecord? Host, CapsuleRecord? Capsule);

/// <summary>
/// What a directory watcher receives: the state after the update and the changes that led to it
/// from the previous update. <see cref="Full"/> marks a state to take whole (the first, or after a
/// watcher had to start over), with no changes to apply.
/// </summary>
public sealed record DirectoryUpdate(DirectoryState State, IReadOnlyList<DirectoryChange> Changes, bool Full)
{
    public static DirectoryUpdate Whole(DirectoryState s) => new(s, [], true);
}

/// <summary>
/// The directory's state and rules (seed Fig. 4/7), with no I/O: locator allocation from the pool,
/// which host holds each capsule, and a revision that grows by one with every change. The embedded
/// store persists it and an etcd store maps the same operations onto keys, so both obey these rules.
/// Immutable, so a snapshot handed to a watcher can never change under it.
/// </summary>
public sealed class DirectoryState
{
    public Prefix Pool { get; }
    public long Revision { get; }
    public ImmutableSortedDictionary<string, HostRecord> Hosts { get; }
    public ImmutableSortedDictionary<string, CapsuleRecord> Capsules { get; }

    /// <summary>
    /// Hosts whose agent has been silent longer than its lease (a directory that tracks liveness,
    /// such as etcd, fills this in). Their records and capsules stay: the agent may only have lost
    /// its way to the directory, and its capsules may well still run and answer.
    /// </summary>
    public ImmutableSortedSet<string> Unreachable { get; init; } = ImmutableSortedSet<string>.Empty;

    public DirectoryState(Prefix pool) : this(pool, 0, ImmutableSortedDictionary<string, HostRecord>.Empty,
        ImmutableSortedDictionary<string, CapsuleRecord>.Empty) { }

    public DirectoryState(Prefix pool, long revision, ImmutableSortedDictionary<string, HostRecord> hosts,
        ImmutableSortedDictionary<string, CapsuleRecord> capsules)
    {
        Pool = pool;
        Revision = revision;
        Hosts = hosts;
        Capsules = capsules;
    }

    /// <summary>
    /// An operation's outcome. <see cref="Conflict"/> marks a refusal because the record changed since
    /// the writer read it: the writer lost a race (fencing), which callers treat apart from other errors.
    /// </summary>
    public readonly record struct Result(
        DirectoryState State, DirectoryChange? Change, string? Error, bool Conflict = false)
    {
        public bool Ok => Error is null;
    }

    Result Fail(string error) => new(this, null, error);

    /// <summary>
    /// This state with a change another store made applied as it was (no rule checked: the store that
    /// made it checked them). O(log n): what a watcher does with each change it is sent.
    /// </summary>
    public DirectoryState Apply(DirectoryChange c) => c.Kind switch
    {
        ChangeKind.HostPut => new(Pool, c.Revision, Hosts.SetItem(c.Host!.Name, c.Host), Capsules)
            { Unreachable = Unreachable },
        ChangeKind.HostDeleted => new(Pool, c.Revision, Hosts.Remove(c.Host!.Name), Capsules)
            { Unreachable = Unreachable.Remove(c.Host.Name) },
        ChangeKind.CapsulePut => new(Pool, c.Revision, Hosts, Capsules.SetItem(c.Capsule!.Name, c.Capsule))
            { Unreachable = Unreachable },
        _ => new(Pool, c.Revision, Hosts, Capsules.Remove(c.Capsule!.Name)) { Unreachable = Unreachable },
    };

    public Result PutHost(HostRecord host)
    {
        if (Names.HostNameError(host.Name) is { } e) return Fail(e);
        if (host.ServesError is { } s) return Fail(s);
        foreach (var h in Hosts.Values)
            if (h.Name != host.Name && h.Underlay == host.Underlay)
                return Fail($"underlay address {host.Underlay} already belongs to host '{h.Name}'");
        if (Hosts.TryGetValue(host.Name, out var existing) && existing == host)
            return new(this, null, null); // re-registration with nothing new: no revision spent
        var rev = Revision + 1;
        return new(new DirectoryState(Pool, rev, Hosts.SetItem(host.Name, host), Capsules),
            new(rev, ChangeKind.HostPut, host, null), null);
    }

    public Result DeleteHost(string name)
    {
        if (!Hosts.ContainsKey(name)) return Fail($"no host named '{name}'");
        foreach (var c in Capsules.Values)
            if (c.Host == name && c.State != CapsuleState.Suspended)
                return Fail($"host '{name}' still holds capsule '{c.Name}'");
        var rev = Revision + 1;
        return new(new DirectoryState(Pool, rev, Hosts.Remove(name), Capsules),
            new(rev, ChangeKind.HostDeleted, Hosts[name], null), null);
    }

    /// <summary>
    /// Reserves the lowest free locator in the pool for a new capsule on <paramref name="host"/>, or with
    /// <paramref name="skip"/> the one that many free locators further on: a writer that lost a race for
    /// the lowest (a shared store, many allocating at once) spreads out instead of colliding again.
    /// </summary>
    public Result AllocateCapsule(string name, string host, int skip = 0)
    {
        if (Names.CapsuleNameError(name) is { } e) return Fail(e);
        if (Capsules.ContainsKey(name)) return Fail($"a capsule named '{name}' already exists");
        if (!Hosts.TryGetValue(host, out var on)) return Fail($"no host named '{host}'");
        if (on.Cordoned) return Fail(CordonedError(host, $"capsule '{name}' was not created"));
        var locator = FreeLocator(Math.Max(skip, 0));
        if (locator.IsNone) return Fail($"the locator pool {Pool} is exhausted ({Capsules.Count} capsules)");
        var rev = Revision + 1;
        var rec = new CapsuleRecord(name, locator, host, CapsuleState.Creating, rev);
        return new(new DirectoryState(Pool, rev, Hosts, Capsules.Add(name, rec)),
            new(rev, ChangeKind.CapsulePut, null, rec), null);
    }

    /// <summary>
    /// Moves a capsule to another host and/or state; its locator never changes. Always conditional:
    /// <paramref name="expectRevision"/> is the record's revision as the writer read it, and the update
    /// is refused if the record changed since. So of two agents that read the same record and both try
    /// to take the capsule, exactly one wins: no capsule ever has two owners.
    /// </summary>
    public Result UpdateCapsule(
        string name, string host, CapsuleState state, long expectRevision, string? detail = null)
    {
        if (!Capsules.TryGetValue(name, out var cur)) return Fail($"no capsule named '{name}'");
        if (expectRevision <= 0)
            return Fail($"an update of capsule '{name}' must name the revision it was read at (got {expectRevision})");
        if (cur.Revision != expectRevision)
        {
            var now = cur.State.ToString().ToLowerInvariant();
            var error = $"capsule '{name}' changed meanwhile: it is now {now} on {cur.Host} " +
                $"(revision {cur.Revision}, expected {expectRevision}); read it again before changing it";
            return new(this, null, error, Conflict: true);
        }
        if (state != CapsuleState.Suspended && !Hosts.ContainsKey(host)) return Fail($"no host named '{host}'");
        // A capsule may change state where it is (a drained host's move that failed resumes it there).
        if (state != CapsuleState.Suspended && host != cur.Host && Hosts[host].Cordoned)
            return Fail(CordonedError(host, $"capsule '{name}' stays on {cur.Host}"));
        var rev = Revision + 1;
        var rec = cur with { Host = host, State = state, Revision = rev, Detail = detail };
        return new(new DirectoryState(Pool, rev, Hosts, Capsules.SetItem(name, rec)),
            new(rev, ChangeKind.CapsulePut, null, rec), null);
    }

    /// <summary>Why a cordoned host took nothing: the same words wherever it is refused.</summary>
    public static string CordonedError(string host, string outcome) =>
        $"host '{host}' is cordoned (draining, drained or kept for maintenance) and takes no new capsule; " +
        $"{outcome}; `capsule uncordon {host}` opens it again";

    /// <summary>Forgets a capsule and returns its locator to the pool.</summary>
    public Result ReleaseCapsule(string name)
    {
        if (!Capsules.TryGetValue(name, out var cur)) return Fail($"no capsule named '{name}'");
        var rev = Revision + 1;
        return new(new DirectoryState(Pool, rev, Hosts, Capsules.Remove(name)),
            new(rev, ChangeKind.CapsuleDeleted, null, cur with { Revision = rev }), null);
    }

    /// <summary>
    /// Lowest free address, skipping the network address, the first host address (kept for a future
    /// pool gateway) and broadcast. Linear in the number of capsules: allocation is control path.
    /// </summary>
    Locator FreeLocator(int skip)
    {
        Locator first = Locator.None;
        var used = new HashSet<uint>(Capsules.Count);
        foreach (var c in Capsules.Values) used.Add(c.Locator.Value);
        for (ulong off = 2; off < Pool.Size - 1; off++)
        {
            var l = Pool.At((uint)off);
            if (used.Contains(l.Value)) continue;
            if (first.IsNone) first = l;
            if (skip-- == 0) return l;
        }
        return first; // fewer free than skipped: the lowest, still free
    }
}
