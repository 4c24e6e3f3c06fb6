using Capsule.Core;

namespace Capsule.Agent.Linux;

/// <summary>
/// A capsule that is a container (issue 13): its own user namespace, whose root is an unprivileged
/// range of host ids, and its own mount namespace on an overlay. The overlay's lower layer is
/// <see cref="Lower"/> seen through an id mapping (so the host's root-owned files are the capsule
/// root's to read, and its copies to change), the upper layer is the capsule's own writable layer
/// in its folder, which travels with it when it moves. The lower layer must be the same on every
/// host: CRIU reopens the capsule's programs from it at the restore.
/// </summary>
internal sealed record OwnRoot(string Lower, uint IdBase, uint IdCount)
{
    public const uint IdsPerCapsule = 65536;

    /// <summary>
    /// Each capsule gets its own range of host ids, from its locator: unique in the cluster and the
    /// same on every host it moves to, so the files of its upper layer keep their owners, and one
    /// capsule's root owns nothing of another's. Ranges start at 65536 (never host root's).
    /// </summary>
    public static OwnRoot For(string lower, Locator locator) =>
        new(lower, IdsPerCapsule * (1 + (locator.Value & 0x7FFF)), IdsPerCapsule);

    /// <summary>True when host id <paramref name="id"/> is one of the capsule's.</summary>
    public bool Owns(long id) => id >= IdBase && id < (long)IdBase + IdCount;

    public Protos.RootFs ToProto() => new() { Lower = Lower, IdBase = IdBase, IdCount = IdCount };

    public static OwnRoot? From(Protos.RootFs? p)
    {
        if (p is null) return null;
        if (!Path.IsPathFullyQualified(p.Lower))
            throw new ArgumentException($"a capsule's lower layer must be an absolute path (got '{p.Lower}')");
        if (p.IdBase < IdsPerCapsule || p.IdCount == 0 || (ulong)p.IdBase + p.IdCount > uint.MaxValue)
            throw new ArgumentException($"a capsule's ids {p.IdBase}+{p.IdCount} are out of range");
        return new OwnRoot(p.Lower, p.IdBase, p.IdCount);
    }

    /// <summary>Before anything of the capsule is built here: its lower layer must be on this host.</summary>
    public void CheckPresent(string name, string host)
    {
        if (!Directory.Exists(Lower))
            throw new InvalidOperationException($"capsule '{name}' runs on the root file system {Lower}, " +
                $"which {host} does not have: copy it there first (docs/containers.md)");
    }

    public Rpc.SuspendMeta.RootMeta ToMeta() => new(Lower, IdBase, IdCount);

    /// <summary>From a suspend file: checked as strictly as from a peer's image stream.</summary>
    public static OwnRoot? From(Rpc.SuspendMeta.RootMeta? m) =>
        m is null ? null : From(new Protos.RootFs { Lower = m.Lower, IdBase = m.IdBase, IdCount = m.IdCount });

    /// <summary>The capsule's writable layer, in its folder (so it is staged and sent like its other files).</summary>
    public static string Upper(string capsuleDir) => Path.Combine(capsuleDir, "upper");

    /// <summary>Its standard output and error, as the capsule sees them (in its upper layer on the host).</summary>
    public const string StdoutInside = "/.capsule/stdout.log";
    public const string StderrInside = "/.capsule/stderr.log";
}

/// <summary>
/// Where a capsule's root is mounted on a host, beside its folder and never sent: the lower layer's
/// id-mapped view, the overlay's work folder (on the upper layer's file system, as overlayfs needs),
/// and the merged root the capsule's mount namespace starts from and CRIU restores into.
/// </summary>
internal sealed record RootMounts(string Folder)
{
    public static RootMounts Of(string stateDir, string capsule) => new(Path.Combine(stateDir, "roots", capsule));

    public string Lower => Path.Combine(Folder, "lower");
    public string Work => Path.Combine(Folder, "work");
    public string Merged => Path.Combine(Folder, "merged");
}
