using System.Formats.Tar;
using System.Runtime.InteropServices;
using Capsule.Agent.Linux;
using Capsule.Rpc;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// A capsule's image as one tar stream: the CRIU images under images/ and the capsule's own
/// folder (its logs, scratch files, working directory) under files/. Files every host has
/// (/usr, program binaries) are not in it.
/// </summary>
internal static class ImageArchive
{
    /// <summary>In an images folder but not CRIU's images: the source's copy of the memory that went ahead.</summary>
    static readonly HashSet<string> NotImages = [Criu.PageStreamFile];

    public static async Task WriteAsync(string archive, string images, string capsuleDir, CancellationToken ct)
    {
        File.Delete(archive);
        await using var fs = PrivateFiles.CreateNew(archive);
        await WriteAsync(fs, images, capsuleDir, ct);
    }

    /// <param name="staged">Files of the capsule's folder (relative paths) the target has already: left out.</param>
    public static async Task WriteAsync(Stream to, string images, string capsuleDir, CancellationToken ct,
        IReadOnlySet<string>? staged = null)
    {
        await using var tar = new TarWriter(to, TarEntryFormat.Pax, leaveOpen: true);
        await AddTree(tar, images, "images", NotImages, ct);
        await AddTree(tar, capsuleDir, "files", staged, ct);
    }

    /// <summary>Some of the capsule's files (relative paths), under files/ as in a whole image.</summary>
    public static async Task WriteFilesAsync(Stream to, string capsuleDir, IEnumerable<string> files,
        CancellationToken ct)
    {
        await using var tar = new TarWriter(to, TarEntryFormat.Pax, leaveOpen: true);
        foreach (var rel in files)
            await tar.WriteEntryAsync(Path.Combine(capsuleDir, rel), "files/" + rel, ct);
    }

    static async Task AddTree(TarWriter tar, string root, string prefix, IReadOnlySet<string>? skip,
        CancellationToken ct)
    {
        foreach (var path in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(root, path);
            if (skip is not null && skip.Contains(rel)) continue;
            if (Native.IsSocketFile(path)) continue;
            if (UpperLayer.OpaqueFolder(path, prefix + "/" + rel) is { } opaque)
                await tar.WriteEntryAsync(opaque, ct);
            else
                await tar.WriteEntryAsync(path, prefix + "/" + rel, ct);
        }
    }

    /// <summary>
    /// Unpacks an image. The archive comes from another host or from a suspend file a user handed over, and the
    /// agent unpacks it as root, so it is checked as outside input: only folders and regular files under images/
    /// or files/, each confined to its folder and holding no more than the archive does. Anything else is refused
    /// with <see cref="InvalidDataException"/> saying which entry.
    /// </summary>
    public static async Task ExtractAsync(string archive, string images, string capsuleDir, CancellationToken ct)
    {
        await using var fs = File.OpenRead(archive);
        // A file's own length bounds what its entries may declare (ExtractEntry).
        await ExtractAsync(fs, archive, new ImageBudget(fs.Length, $"the size of {archive}"), images, capsuleDir, ct);
    }

    /// <summary>
    /// Unpacks an image from <paramref name="source"/> (named <paramref name="shownAs"/> in errors), then runs
    /// <paramref name="verify"/>, the check of the checksum over the bytes just read. Nothing unpacked outlives a
    /// failure, of either: the two folders are deleted, so nothing is ever restored from an unverified image.
    /// What it unpacks is bounded by <paramref name="budget"/>.
    /// </summary>
    /// <param name="owners">The capsule has its own root (<see cref="OwnRoot"/>): its upper layer's entries
    /// keep their owners, which must be the capsule's ids (<see cref="UpperLayer"/>).</param>
    public static async Task ExtractCheckedAsync(Stream source, string shownAs, Func<CancellationToken, Task> verify,
        ImageBudget budget, string images, string capsuleDir, CancellationToken ct, OwnRoot? owners = null)
    {
        try
        {
            try
            {
                await ExtractAsync(source, shownAs, budget, images, capsuleDir, ct, owners);
            }
            catch (InvalidDataException)
            {
                // An archive that does not parse was most often damaged on its way: the checksum, when it
                // fails, names that cause rather than the entry it garbled.
                await verify(ct);
                throw;
            }
            await verify(ct);
        }
        catch
        {
            foreach (var folder in (string[])[images, capsuleDir])
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            throw;
        }
    }

    static async Task ExtractAsync(Stream source, string shownAs, ImageBudget budget, string images,
        string capsuleDir, CancellationToken ct, OwnRoot? owners = null)
    {
        // The agent's folders, and everything in them, for root alone (PrivateFiles).
        PrivateFiles.CreateFolder(images);
        PrivateFiles.CreateFolder(capsuleDir);
        var length = source.CanSeek ? source.Length : long.MaxValue;
        await using var tar = new TarReader(source, leaveOpen: true);
        try
        {
            while (await tar.GetNextEntryAsync(cancellationToken: ct) is { } e)
            {
                budget.Charge(e);
                await ExtractEntry(e, length, images, capsuleDir, owners, ct);
            }
        }
        // TarReader's other ways of saying the archive is damaged: a header or its data cut short (it reads past
        // the end), a number field out of range (a base-256 size past long.MaxValue overflows).
        catch (Exception e) when (e is EndOfStreamException or OverflowException or FormatException)
        {
            throw new InvalidDataException($"{shownAs} is truncated or damaged ({e.Message})");
        }
    }

    static async Task ExtractEntry(TarEntry e, long archiveLength, string images, string capsuleDir,
        OwnRoot? owners, CancellationToken ct)
    {
        var (root, rel) = e.Name.StartsWith("images/", StringComparison.Ordinal) ? (images, e.Name[7..])
            : e.Name.StartsWith("files/", StringComparison.Ordinal) ? (capsuleDir, e.Name[6..])
            : throw new InvalidDataException($"unexpected entry '{e.Name}' in the image");
        if (rel.Contains('\0')) throw new InvalidDataException($"entry '{e.Name}' has a NUL in its name");
        var mode = ModeOf(e, capsuleFile: root == capsuleDir);
        root = Path.GetFullPath(root);
        var dest = Path.GetFullPath(Path.Combine(root, rel));
        if (!dest.StartsWith(root + "/", StringComparison.Ordinal))
            throw new InvalidDataException($"entry '{e.Name}' points outside the capsule");
        // A file where a folder of this entry's path should be (an earlier entry of the same name).
        for (var p = Path.GetDirectoryName(dest)!; p.Length > root.Length; p = Path.GetDirectoryName(p)!)
            if (File.Exists(p) || UpperLayer.IsLink(p))
                throw new InvalidDataException($"entry '{e.Name}' is inside a file or behind a link");
        if (owners is not null && root == Path.GetFullPath(capsuleDir) && UpperLayer.Holds(rel))
        {
            await UpperLayer.ExtractAsync(e, dest, owners, archiveLength, ct);
            return;
        }
        // Only what WriteAsync makes of CRIU's images and a capsule's files. A device node would hand the
        // capsule a host device (made as root), a hard link a host file; a symbolic link would let a later
        // entry write through it outside the folder (TarEntry.ExtractToFile would refuse links anyway). A
        // named pipe is harmless where it is, and a capsule may keep one in its folder: it moves as before.
        switch (e.EntryType)
        {
            case TarEntryType.Directory:
                if (File.Exists(dest)) throw new InvalidDataException($"entry '{e.Name}' is a file already");
                PrivateFiles.CreateFolder(dest, mode);
                return;
            case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.Fifo:
                break;
            default:
                throw new InvalidDataException($"entry '{e.Name}' is a {e.EntryType}: an image holds only " +
                    "folders, regular files and named pipes");
        }
        CheckLength(e, archiveLength);
        if (Directory.Exists(dest)) throw new InvalidDataException($"entry '{e.Name}' is a folder already");
        PrivateFiles.CreateFolder(Path.GetDirectoryName(dest)!);
        // A later entry of the same name replaces an earlier one, as tar does; made anew, with its mode from the start.
        File.Delete(dest);
        if (e.EntryType == TarEntryType.Fifo)
        {
            if (Native.mkfifo(dest, (uint)mode) != 0)
                throw new IOException($"could not make the named pipe {dest} (errno {Marshal.GetLastPInvokeError()})");
            PrivateFiles.SetMode(dest, mode); // as the umask narrowed it (see PrivateFiles.CreateNew)
            return;
        }
        // Not TarEntry.ExtractToFile: it sets the archive's mode after creating the file, special bits and all.
        await using var to = PrivateFiles.CreateNew(dest, mode);
        if (e.DataStream is { } data) await data.CopyToAsync(to, ct);
    }

    /// <summary>A declared size past the end of the archive is refused before anything is written for it.</summary>
    internal static void CheckLength(TarEntry e, long archiveLength)
    {
        if (e.Length < 0 || (e.DataOffset >= 0 && e.Length > archiveLength - e.DataOffset))
            throw new InvalidDataException($"entry '{e.Name}' declares {e.Length} bytes, more than the image holds");
    }

    /// <summary>
    /// The mode a file or folder is created with. CRIU's images are the agent's: 0600 (folders 0700).
    /// The capsule's own files keep their permission bits, as CRIU demands of every file a process
    /// had open (seen: "stdout.log has bad mode 0100600 (expect 0100644)"), but never setuid, setgid
    /// or sticky: the archive's author does not get to make a set-user-id root program on this host.
    /// </summary>
    static UnixFileMode ModeOf(TarEntry e, bool capsuleFile)
    {
        if (!capsuleFile)
            return e.EntryType == TarEntryType.Directory ? PrivateFiles.FolderMode : PrivateFiles.FileMode;
        const UnixFileMode permissions = (UnixFileMode)0x1FF; // 0777
        return e.Mode & permissions;
    }
}
