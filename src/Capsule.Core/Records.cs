namespace Capsule.Core;

public enum CapsuleState
{
    /// <summary>Locator reserved, plumbing being built.</summary>
    Creating = 0,
    Running = 1,
    /// <summary>Its process tree is gone (exited or killed); the capsule keeps its locator until removed.</summary>
    Stopped = 2,
    Migrating = 3,
    Suspended = 4,
}

/// <summary>
/// A host that runs an agent: its name, its underlay address and where its agent listens. A
/// gateway (the seed's special router, Fig. 9) also names the ordinary networks it serves, as
/// prefixes joined by commas: capsule traffic for those goes to it. A cordoned host (draining, drained, or
/// held for maintenance) takes no new capsule, made or moved, until it is uncordoned (docs/drain.md).
/// </summary>
public sealed record HostRecord(string Name, Locator Underlay, string AgentEndpoint, string Serves = "",
    bool Cordoned = false)
{
    public bool IsGateway => ServedPrefixes.Any();

    /// <summary>
    /// The served prefixes that parse; <see cref="DirectoryState.PutHost"/> refuses a record with any that does not.
    /// </summary>
    public IEnumerable<Prefix> ServedPrefixes =>
        Serves.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => Prefix.TryParse(s, out var p) ? p : (Prefix?)null).OfType<Prefix>();

    public string? ServesError =>
        Serves.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(s => !Prefix.TryParse(s, out _))
            .Select(s => $"host '{Name}' serves '{s}', which is not an IPv4 prefix (a.b.c.d/len)").FirstOrDefault();
}

/// <summary>A capsule as the directory knows it (seed Fig. 4): its locator and the host it is on.</summary>
public sealed record CapsuleRecord(string Name, Locator Locator, string Host, CapsuleState State, long Revision)
{
    public string? Detail { get; init; }
}
