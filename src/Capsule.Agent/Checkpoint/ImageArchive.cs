using System.Formats.Tar;
using System.Security.Cryptography;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// A capsule's image as one tar stream: the CRIU images under images/ and the capsule's own
/// folder (its logs, scratch files, working directory) under files/. Files every host has
/// (/usr, program binaries) are not in it.
/// </summary>
internal static class ImageArchive
{
    public static async Task WriteAsync(string archive, string images, string capsuleDir, CancellationToken ct)
    {
        await using var fs = File.Create(archive);
        await WriteAsync(fs, images, capsuleDir, ct);
    }

    public static async Task WriteAsync(Stream to, string images, string capsuleDir, CancellationToken ct)
    {
        await using var tar = new TarWriter(to, TarEntryFormat.Pax, leaveOpen: true);
        await AddTree(tar, images, "images", ct);
        await AddTree(tar, capsuleDir, "files", ct);
    }

    static async Task AddTree(TarWriter tar, string root, string prefix, CancellationToken ct)
    {
        foreach (var path in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories))
        {
            var rel = prefix + "/" + Path.GetRelativePath(root, path);
            await tar.WriteEntryAsync(path, rel, ct);
        }
    }

    public static async Task ExtractAsync(string archive, string images, string capsuleDir, CancellationToken ct)
    {
        Directory.CreateDirectory(images);
        Directory.CreateDirectory(capsuleDir);
        await using var fs = File.OpenRead(archive);
        await using var tar = new TarReader(fs);
        while (await tar.GetNextEntryAsync(cancellationToken: ct) is { } e)
        {
            var (root, rel) = e.Name.StartsWith("images/", StringComparison.Ordinal) ? (images, e.Name[7..])
                : e.Name.StartsWith("files/", StringComparison.Ordinal) ? (capsuleDir, e.Name[6..])
                : throw new InvalidDataException($"unexpected entry '{e.Name}' in the image");
            var dest = Path.GetFullPath(Path.Combine(root, rel));
            if (!dest.StartsWith(Path.GetFullPath(root) + "/", StringComparison.Ordinal))
                throw new InvalidDataException($"entry '{e.Name}' points outside the capsule");
            if (e.EntryType == TarEntryType.Directory)
            {
                Directory.CreateDirectory(dest);
                continue;
            }
            Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
            await e.ExtractToFileAsync(dest, overwrite: true, ct);
        }
    }

    public static async Task<string> Sha256Async(string file, CancellationToken ct)
    {
        await using var fs = File.OpenRead(file);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(fs, ct));
    }
}
