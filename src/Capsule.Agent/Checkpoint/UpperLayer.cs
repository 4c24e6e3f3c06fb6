using System.Formats.Tar;
using Capsule.Agent.Linux;
using Capsule.Rpc;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// Unpacking the upper layer of a capsule's own root (<see cref="OwnRoot"/>) from an image. Unlike the
/// rest of a capsule's folder, its entries are the capsule's file system as its own users left it: they
/// keep owner and mode (setuid, sticky), which is harmless because every owner must be one of the
/// capsule's unprivileged ids; and it may hold symbolic links and overlayfs's whiteouts (a character
/// device 0:0, how a deleted lower file stays deleted). A link is made, never followed: an entry
/// behind one is refused (<see cref="ImageArchive"/> checks every entry's folders).
/// A folder the capsule deleted and made anew is opaque to overlayfs (an extended attribute): the lower layer's
/// entries stay hidden under it. The mark travels as a PAX record, named as GNU tar's --xattrs names it.
/// </summary>
internal static class UpperLayer
{
    const string Folder = "upper";
    const string Opaque = "trusted.overlay.opaque";
    const string PaxOpaque = "SCHILY.xattr." + Opaque;

    public static bool Holds(string rel) => rel == Folder || rel.StartsWith(Folder + "/", StringComparison.Ordinal);

    public static bool IsLink(string path) => new FileInfo(path).LinkTarget is not null;

    public static async Task ExtractAsync(TarEntry e, string dest, OwnRoot owners, long archiveLength,
        CancellationToken ct)
    {
        if (!owners.Owns(e.Uid) || !owners.Owns(e.Gid))
            throw new InvalidDataException($"entry '{e.Name}' belongs to {e.Uid}:{e.Gid}, not to the capsule's ids " +
                $"({owners.IdBase}-{(long)owners.IdBase + owners.IdCount - 1})");
        var mode = (uint)e.Mode & 0xFFF;
        if (e.EntryType == TarEntryType.Directory)
        {
            if (File.Exists(dest) || IsLink(dest))
                throw new InvalidDataException($"entry '{e.Name}' is a file already");
            Directory.CreateDirectory(dest);
            Own(dest, e, mode);
            if (e is PaxTarEntry pax && pax.ExtendedAttributes.TryGetValue(PaxOpaque, out var v) && v == "y")
                MarkOpaque(dest);
            return;
        }
        if (Directory.Exists(dest) && !IsLink(dest))
            throw new InvalidDataException($"entry '{e.Name}' is a folder already");
        PrivateFiles.CreateFolder(Path.GetDirectoryName(dest)!);
        File.Delete(dest);
        switch (e.EntryType)
        {
            case TarEntryType.SymbolicLink:
                File.CreateSymbolicLink(dest, e.LinkName);
                Chown(dest, e);
                return;
            case TarEntryType.CharacterDevice when e is PosixTarEntry { DeviceMajor: 0, DeviceMinor: 0 }:
                Native.ThrowIfFailed(Native.mknod(dest, 0x2000 | mode, 0), $"make the whiteout {dest}"); // S_IFCHR, 0:0
                Own(dest, e, mode);
                return;
            case TarEntryType.Fifo:
                Native.ThrowIfFailed(Native.mkfifo(dest, mode), $"make the named pipe {dest}");
                Own(dest, e, mode);
                return;
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile:
                break;
            default:
                throw new InvalidDataException($"entry '{e.Name}' is a {e.EntryType}: a capsule's layer holds only " +
                    "folders, files, links, named pipes and whiteouts");
        }
        ImageArchive.CheckLength(e, archiveLength);
        await using (var to = PrivateFiles.CreateNew(dest, UnixFileMode.UserRead | UnixFileMode.UserWrite))
            if (e.DataStream is { } data) await data.CopyToAsync(to, ct);
        Own(dest, e, mode);
    }

    /// <summary>
    /// The entry for a folder of the upper layer (<paramref name="path"/>) that overlayfs marked opaque, with its
    /// owner, mode and time; null for any other entry, which the archive writes from the file as it is.
    /// </summary>
    public static unsafe PaxTarEntry? OpaqueFolder(string path, string name)
    {
        byte v;
        if (!Directory.Exists(path) || Native.lgetxattr(path, Opaque, &v, 1) != 1 || v != (byte)'y') return null;
        Native.Statx st;
        Native.ThrowIfFailed(Native.statx(Native.AtFdCwd, path, Native.AtSymlinkNoFollow, Native.StatxBasicStats,
            &st), $"read the owner of {path}");
        return new PaxTarEntry(TarEntryType.Directory, name, new Dictionary<string, string> { [PaxOpaque] = "y" })
        {
            Uid = (int)st.Uid,
            Gid = (int)st.Gid,
            Mode = (UnixFileMode)(st.Mode & 0xFFF),
            ModificationTime = DateTimeOffset.FromUnixTimeSeconds(st.MtimeSec),
        };
    }

    static unsafe void MarkOpaque(string path)
    {
        byte y = (byte)'y';
        Native.ThrowIfFailed(Native.lsetxattr(path, Opaque, &y, 1, 0), $"mark {path} opaque");
    }

    /// <summary>Owner first, then mode: chown clears setuid and setgid.</summary>
    static void Own(string path, TarEntry e, uint mode)
    {
        Chown(path, e);
        Native.ThrowIfFailed(Native.chmod(path, mode), $"set the mode of {path}");
    }

    static void Chown(string path, TarEntry e) =>
        Native.ThrowIfFailed(Native.lchown(path, (uint)e.Uid, (uint)e.Gid), $"set the owner of {path}");
}
