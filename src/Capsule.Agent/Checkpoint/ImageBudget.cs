using System.Formats.Tar;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// What one incoming image may put on this host's disk. A migration's image arrives as a stream whose length
/// nobody declares up front, and an image is unpacked before its checksum can be checked, so without a bound a
/// sender (or a damaged stream) could fill the agent's file system and starve every capsule on the host. Each
/// entry is charged its declared size before a byte of it is written; past the budget the image is refused as
/// malformed, and <see cref="ImageArchive.ExtractCheckedAsync"/> removes what was unpacked.
/// </summary>
internal sealed class ImageBudget
{
    /// <summary>Most entries (files, folders, pipes) in one image: a capsule's many times over.</summary>
    public const int MaxEntries = 1_000_000;

    /// <summary>Left free on the agent's file system whatever an image asks: the host's journals and state.</summary>
    public const long Reserve = 512L << 20;

    readonly long _bytes;
    readonly string _why;
    readonly Lock _gate = new();
    long _used;
    int _entries;

    public ImageBudget(long bytes, string why)
    {
        _bytes = bytes;
        _why = why;
    }

    /// <summary>
    /// The smaller of <paramref name="maxBytes"/> (the agent's MaxImageBytes) and the free space of the file
    /// system holding <paramref name="folder"/> less <see cref="Reserve"/>, as it is when the image starts.
    /// </summary>
    public static ImageBudget For(string folder, long maxBytes)
    {
        var free = new DriveInfo(folder).AvailableFreeSpace - Reserve;
        return free < maxBytes
            ? new ImageBudget(Math.Max(free, 0), $"the free space on {folder} less {Reserve >> 20} MiB kept free")
            : new ImageBudget(maxBytes, "MaxImageBytes");
    }

    /// <summary>Charges an entry before it is written; refuses it when the image would pass the budget.</summary>
    public void Charge(TarEntry e)
    {
        if (Interlocked.Increment(ref _entries) > MaxEntries)
            throw new InvalidDataException($"the image holds more than {MaxEntries} entries");
        var size = e.EntryType is TarEntryType.RegularFile or TarEntryType.V7RegularFile ? Math.Max(e.Length, 0) : 0;
        Charge(size, $"entry '{e.Name}'");
    }

    /// <summary>
    /// Charges <paramref name="size"/> bytes of <paramref name="what"/> (its memory pages, say) before they are
    /// written. The pages and the archive of one image may be charged from two streams at once.
    /// </summary>
    public void Charge(long size, string what)
    {
        lock (_gate)
        {
            if (size > _bytes - _used)
                throw new InvalidDataException($"the image needs more than {_bytes} bytes ({_why}): {what} " +
                    $"adds {size} to {_used}");
            _used += size;
        }
    }
}
