using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Capsule.Protos;
using Capsule.Rpc;
using Google.Protobuf;

namespace Capsule.Agent.Migration;

/// <summary>
/// The capsule's own folder (its working directory: data files, logs, scratch space) sent to the target
/// before the sync, while the capsule still runs, so that the freeze carries only the files that changed
/// since (issue 12, item 2). A file the target has is used there only if, at the freeze, it is still the
/// same file with the same size and times as when it was read: any write moves its change time, which no
/// program can set back (utimensat sets it to now). The kernel's file clock is coarse, so a write in the
/// same tick as the read could leave the times as they were; a file changed in the last second is
/// therefore not sent ahead at all, and goes at the freeze as before.
/// </summary>
internal sealed class StagedFiles
{
    static readonly TimeSpan Settled = TimeSpan.FromSeconds(1);
    readonly Dictionary<string, FileStamp> _sent;

    StagedFiles(Dictionary<string, FileStamp> sent, long bytes)
    {
        _sent = sent;
        Bytes = bytes;
    }

    /// <summary>Nothing sent ahead: the freeze sends every file, as without staging.</summary>
    public static StagedFiles None { get; } = new([], 0);

    /// <summary>The bytes of the archive sent ahead.</summary>
    public long Bytes { get; }

    /// <summary>
    /// Sends the settled files of <paramref name="dir"/> to the target's Stage, checksummed; returns what it sent.
    /// </summary>
    public static async Task<StagedFiles> SendAsync(HostAgent.HostAgentClient target, string name, string dir,
        RootFs? root, TransferMeter meter, CancellationToken ct)
    {
        // Stamped before reading: a write during the read changes the stamp, and the file goes again at the freeze.
        var settledBefore = DateTimeOffset.UtcNow - Settled;
        var sent = new Dictionary<string, FileStamp>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
            if (FileStamp.Of(path) is { Regular: true } s && s.Changed < settledBefore)
                sent[Path.GetRelativePath(dir, path)] = s;
        if (sent.Count == 0) return None;
        await using var watch = meter.Watch("stage", sent.Values.Sum(s => (long)s.Size));
        using var call = target.Stage(cancellationToken: ct);
        await call.RequestStream.WriteAsync(new ImageChunk { Name = name, RootFs = root }, ct);
        await using var stream = new ChunkStream(async (data, token) =>
        {
            await meter.SendingAsync(data.Length, token);
            await call.RequestStream.WriteAsync(new ImageChunk { Data = ByteString.CopyFrom(data.Span) }, token);
        });
        await ImageArchive.WriteFilesAsync(stream, dir, sent.Keys, ct);
        var sha = await stream.FinishAsync(ct);
        await call.RequestStream.WriteAsync(new ImageChunk { Sha256 = sha }, ct);
        await call.RequestStream.CompleteAsync();
        await call;
        return new StagedFiles(sent, stream.Length_);
    }

    /// <summary>At the freeze: the files sent ahead that are still as they were (relative paths).</summary>
    public HashSet<string> Unchanged(string dir) =>
        _sent.Where(kv => FileStamp.Of(Path.Combine(dir, kv.Key)) == kv.Value)
            .Select(kv => kv.Key)
            .ToHashSet(StringComparer.Ordinal);

    /// <summary>What tells a file's content apart without reading it: its inode, size and two times (statx).</summary>
    readonly record struct FileStamp(bool Regular, ulong Inode, ulong Size, long ChangedNs, long ModifiedNs)
    {
        public DateTimeOffset Changed => DateTimeOffset.UnixEpoch.AddTicks(ChangedNs / 100);

        public static unsafe FileStamp? Of(string path)
        {
            Native.Statx st;
            if (Native.statx(Native.AtFdCwd, path, Native.AtSymlinkNoFollow, Native.StatxBasicStats, &st) != 0)
                return null; // gone since it was listed: nothing to send ahead, nothing to keep
            const int typeMask = 0xF000;
            const int regular = 0x8000;
            return new FileStamp((st.Mode & typeMask) == regular, st.Ino, st.Size,
                st.CtimeSec * 1_000_000_000 + st.CtimeNsec, st.MtimeSec * 1_000_000_000 + st.MtimeNsec);
        }
    }
}
