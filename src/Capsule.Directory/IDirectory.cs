using Capsule.Core;

namespace Capsule.Dir;

/// <summary>
/// The capsule directory (seed Fig. 4/7) as agents and the CLI use it. The embedded store and a
/// remote (gRPC) view implement it; an etcd store plugs in here too. Failures are
/// <see cref="DirectoryException"/> with a message meant for people.
/// </summary>
public interface IDirectory
{
    Task PutHostAsync(HostRecord host, CancellationToken ct = default);
    Task DeleteHostAsync(string name, CancellationToken ct = default);
    Task<CapsuleRecord> AllocateAsync(string name, string host, CancellationToken ct = default);

    /// <summary>
    /// Moves a capsule to a host and state, only if its record is still at <paramref name="expectRevision"/>
    /// (the revision the caller read): there is no unconditional update, so two agents can never both
    /// own a capsule. A lost race fails with <see cref="DirectoryException.Conflict"/> set.
    /// </summary>
    Task<CapsuleRecord> UpdateAsync(string name, string host, CapsuleState state, long expectRevision,
        string? detail = null, CancellationToken ct = default);

    Task ReleaseAsync(string name, CancellationToken ct = default);
    Task<DirectoryState> SnapshotAsync(CancellationToken ct = default);

    /// <summary>
    /// A whole state first, then the changes as they happen (several at once for a watcher that fell
    /// behind), each update with the state after it, until cancelled.
    /// </summary>
    IAsyncEnumerable<DirectoryUpdate> WatchAsync(CancellationToken ct);
}

/// <summary>A directory failure; <see cref="Conflict"/> when a conditional update lost to another writer.</summary>
public sealed class DirectoryException(string message, bool conflict = false) : Exception(message)
{
    public bool Conflict => conflict;
}

public static class DirectoryReads
{
    /// <summary>The capsule's record as the directory has it now (for a conditional update).</summary>
    public static async Task<CapsuleRecord> ReadAsync(this IDirectory d, string name, CancellationToken ct = default) =>
        (await d.SnapshotAsync(ct)).Capsules.GetValueOrDefault(name)
        ?? throw new DirectoryException($"no capsule named '{name}'");
}
