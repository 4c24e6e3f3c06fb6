using Capsule.Core;

namespace Capsule.Dir;

/// <summary>
/// The capsule directory (seed Fig. 4/7) as agents and the CLI use it. The embedded store and a
/// remote (gRPC) view implement it; an etcd store plugs in here too. Failures are
/// <see cref="DirectoryException"/> with a message meant for people.
/// </summary>
internal interface IDirectory
{
    Task PutHostAsync(HostRecord host, CancellationToken ct = default);
    Task DeleteHostAsync(string name, CancellationToken ct = default);
    Task<CapsuleRecord> AllocateAsync(string name, string host, CancellationToken ct = default);
    Task<CapsuleRecord> UpdateAsync(string name, string host, CapsuleState state, string? detail = null, long expectRevision = 0, CancellationToken ct = default);
    Task ReleaseAsync(string name, CancellationToken ct = default);
    Task<DirectoryState> SnapshotAsync(CancellationToken ct = default);

    /// <summary>A full state first, then every later state, one per change, until cancelled.</summary>
    IAsyncEnumerable<DirectoryState> WatchAsync(CancellationToken ct);
}

internal sealed class DirectoryException(string message) : Exception(message);
