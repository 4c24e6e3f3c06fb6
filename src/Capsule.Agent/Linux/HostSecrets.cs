namespace Capsule.Agent.Linux;

/// <summary>
/// What a capsule whose lower layer is the host's own `/` (<see cref="OwnRoot"/>) must not read there. The id
/// mapping that lets its root change the host's files (in its own layer) also makes it the owner of every
/// root-owned file, secrets included. So, before its first start: the password hashes are left out of copies
/// of the shadow files in its layer, the host's SSH private keys are hidden by overlayfs whiteouts there, and
/// folders of secrets (the agent's state and keys, the CLI's contexts, TLS keys, etcd's data) are covered by
/// empty read-only mounts in its mount namespace (<see cref="Masked"/>). All of it moves with the capsule:
/// the layer as files, the mounts in CRIU's image of its mount namespace.
/// </summary>
internal static class HostSecrets
{
    public static IEnumerable<string> Masked(string stateDir) =>
        [stateDir, "/var/lib/capsule", "/etc/capsule", "/root/.config/capsule", "/etc/ssl/private", "/var/lib/etcd"];

    static readonly string[] Shadows = ["etc/shadow", "etc/gshadow", "etc/shadow-", "etc/gshadow-"];

    /// <summary>Prepares a new upper layer (one that does not exist yet) over the host's `/`.</summary>
    public static void Seed(OwnRoot root, string upper)
    {
        MakeFolderLike(root, upper, "/");
        foreach (var rel in Shadows)
        {
            var lower = "/" + rel;
            if (!File.Exists(lower)) continue;
            // "name:hash:rest": the hash goes; a locked account ("!…") stays locked, any other has no password.
            var lines = File.ReadAllLines(lower).Select(l => l.Split(':') is { Length: > 2 } f
                ? string.Join(':', [f[0], f[1].StartsWith('!') ? "!" : "*", .. f[2..]])
                : l);
            var dest = Path.Combine(upper, rel);
            MakeParentsLike(root, upper, rel);
            File.WriteAllLines(dest, lines);
            Own(root, dest, lower);
        }
        if (!Directory.Exists("/etc/ssh")) return;
        foreach (var key in Directory.EnumerateFiles("/etc/ssh", "ssh_host_*_key"))
        {
            var rel = key.TrimStart('/');
            MakeParentsLike(root, upper, rel);
            var dest = Path.Combine(upper, rel);
            // A whiteout: overlayfs shows no file there; the capsule may make its own (ssh-keygen -A).
            Native.ThrowIfFailed(Native.mknod(dest, 0x2000, 0), $"hide {key} from the capsule");
            Chown(dest, root.IdBase, root.IdBase);
        }
    }

    static void MakeParentsLike(OwnRoot root, string upper, string rel)
    {
        var parts = rel.Split('/')[..^1];
        for (var i = 1; i <= parts.Length; i++)
        {
            var sub = string.Join('/', parts[..i]);
            if (!Directory.Exists(Path.Combine(upper, sub))) MakeFolderLike(root, Path.Combine(upper, sub), "/" + sub);
        }
    }

    internal static void MakeFolderLike(OwnRoot root, string dest, string lower)
    {
        Directory.CreateDirectory(dest);
        Own(root, dest, lower);
    }

    /// <summary>The lower file's owner (as the capsule sees it, mapped) and mode.</summary>
    static unsafe void Own(OwnRoot root, string dest, string lower)
    {
        Native.Statx st;
        Native.ThrowIfFailed(Native.statx(Native.AtFdCwd, lower, 0, Native.StatxBasicStats, &st),
            $"read {lower}'s owner");
        Chown(dest, root.IdBase + st.Uid, root.IdBase + st.Gid);
        Native.ThrowIfFailed(Native.chmod(dest, st.Mode & 0xFFFu), $"set the mode of {dest}");
    }

    internal static void Chown(string path, uint uid, uint gid) =>
        Native.ThrowIfFailed(Native.lchown(path, uid, gid), $"set the owner of {path}");
}
