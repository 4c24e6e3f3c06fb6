using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

/// <summary>The resume half: a suspend file from the CLI, checked, restored here, claimed in the directory.</summary>
internal sealed partial class Suspension
{
    /// <summary>
    /// Takes a suspend file streamed by the CLI into this host's <see cref="Incoming"/> folder, checks
    /// it and restores its capsule here. The copy is deleted at the end whatever happens; a damaged or
    /// cut-short file is refused before anything of the capsule is built.
    /// </summary>
    public async Task<ResumeResult> ResumeAsync(IAsyncStreamReader<FileChunk> stream, CancellationToken ct)
    {
        if (!await stream.MoveNext(ct)) throw new ArgumentException("the resume stream is empty");
        var head = stream.Current;
        if (head.Size <= 0)
            throw new ArgumentException("the resume stream does not begin with the file's size " +
                "(is the CLI older than this agent?)");
        var label = head.File.Length > 0 ? head.File : "the file";
        PrivateFiles.CreateFolder(Incoming);
        var free = new DriveInfo(Incoming).AvailableFreeSpace;
        if (free < head.Size)
            throw new InvalidOperationException($"{O.Host} has {free >> 20} MiB free in {Incoming}, " +
                $"{label} needs {head.Size >> 20} MiB");
        DeleteLeftovers();
        var path = Path.Combine(Incoming, Guid.NewGuid().ToString("n") + ".capsule");
        _receiving[path] = 0;
        try
        {
            await using (var fs = PrivateFiles.CreateNew(path))
            {
                try
                {
                    await FileTransfer.ReceiveAsync(stream, head.Size, fs, null, ct);
                }
                catch (InvalidDataException e)
                {
                    throw new ArgumentException($"{label}: {e.Message}");
                }
            }
            // Once the file is here, the resume runs to its end even if the CLI goes away.
            var r = await ResumeFileAsync(path, label, CancellationToken.None);
            r.Bytes = head.Size;
            return r;
        }
        finally
        {
            File.Delete(path);
            _receiving.TryRemove(path, out _);
        }
    }

    /// <summary>Files an agent that went down mid-transfer left in <see cref="Incoming"/>.</summary>
    void DeleteLeftovers()
    {
        foreach (var f in Directory.EnumerateFiles(Incoming))
            if (!_receiving.ContainsKey(f)) File.Delete(f);
    }

    async Task<ResumeResult> ResumeFileAsync(string path, string label, CancellationToken ct)
    {
        var clock = new PhaseClock();
        var (file, signer) = await OpenCheckedAsync(path, label, ct);
        await using var _ = file;
        var meta = file.Meta;
        var state = await directory.SnapshotAsync(ct);
        var rec = CheckResumable(meta, state);
        var root = OwnRoot.From(meta.Root);
        root?.CheckPresent(meta.Name, O.Host);
        await criu.CheckAsync(ct);
        if (!runtime.TryBeginMove(meta.Name))
            throw new InvalidOperationException($"capsule '{meta.Name}' is being resumed already");
        var work = Path.Combine(O.StateDir, "migrations", meta.Name + ".resume");
        try
        {
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
            PrivateFiles.CreateFolder(work);
            var loc = Locator.Parse(meta.Locator);
            var restored = await target.RestoreHereAsync(meta.Name, loc, meta.Command, meta.UdpDrop,
                (images, dir) => UnpackAsync(file, label, images, dir, root, ct), work, ct,
                root: root, limits: CapsuleLimits.From(meta.Limits));
            await ClaimAsync(rec);
            // Every host may be holding the capsule's packets (its peers and its old host): all flush here.
            var self = state.Hosts[O.Host].Underlay;
            var tally = await holds.ReleaseAsync(loc, state.Hosts.Values.Select(h => h.Underlay), self, state);
            LogResumed(log, meta.Name, label, signer, restored.Pid);
            return new ResumeResult
            {
                Name = meta.Name, Locator = meta.Locator, Host = O.Host, Pid = restored.Pid, RestoreMs = restored.Ms,
                TotalMs = clock.Total, Flushed = tally.Flushed, Dropped = tally.Dropped,
            };
        }
        finally
        {
            runtime.EndMove(meta.Name);
            if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        }
    }

    /// <summary>The image is unpacked and its checksum checked before anything of the capsule is built.</summary>
    /// <param name="root">A container's: its writable layer's files keep their owners, which must be its ids.</param>
    async Task UnpackAsync(SuspendReader file, string label, string images, string dir, OwnRoot? root,
        CancellationToken ct)
    {
        try
        {
            var budget = ImageBudget.For(O.StateDir, O.MaxImageBytes);
            await ImageArchive.ExtractCheckedAsync(file, label, file.VerifyAsync, budget, images, dir, ct, root);
        }
        catch (InvalidDataException e)
        {
            throw new ArgumentException(e.Message);
        }
    }

    /// <summary>
    /// Marks the restored capsule running here. Only one resume of a file wins: the revision must still be the
    /// suspended one; a loser removes what it restored.
    /// </summary>
    async Task ClaimAsync(CapsuleRecord rec)
    {
        try
        {
            await directory.UpdateAsync(rec.Name, O.Host, CapsuleState.Running, rec.Revision, null,
                CancellationToken.None);
        }
        catch (DirectoryException)
        {
            if (runtime.Find(rec.Name) is { } c) await runtime.EvictAsync(c);
            throw;
        }
    }

    /// <summary>
    /// Opens a resume's file: its header and metadata read, and who signed it checked (<see cref="SuspendReader
    /// .CheckSigner"/>: with a cluster identity, one of its hosts) before anything is read further or changed.
    /// That the signature is over these very bytes is checked with the checksum as they are unpacked
    /// (<see cref="SuspendReader.VerifyAsync"/>): one read of the file, no window between check and use.
    /// </summary>
    static async Task<(SuspendReader File, string Signer)> OpenCheckedAsync(string path, string label,
        CancellationToken ct)
    {
        SuspendReader? file = null;
        try
        {
            file = await SuspendFile.OpenAsync(path, ct, shownAs: label);
            return (file, file.CheckSigner(Channels.Identity));
        }
        catch (Exception e) when (e is FileNotFoundException or InvalidDataException)
        {
            if (file is not null) await file.DisposeAsync();
            throw new ArgumentException(e.Message);
        }
    }

    CapsuleRecord CheckResumable(SuspendMeta meta, DirectoryState state)
    {
        if (!state.Capsules.TryGetValue(meta.Name, out var rec) || rec.Locator.ToString() != meta.Locator)
            throw new InvalidOperationException(
                $"capsule '{meta.Name}' ({meta.Locator}) is no longer in the directory: " +
                "its locator was released, so this file cannot be resumed");
        if (rec.State != CapsuleState.Suspended)
            throw new InvalidOperationException(
                $"capsule '{meta.Name}' is {rec.State.ToString().ToLowerInvariant()} on {rec.Host}, " +
                "not suspended: this file was resumed already");
        if (rec.Detail is null || !rec.Detail.EndsWith("id=" + meta.Id, StringComparison.Ordinal))
            throw new InvalidOperationException(
                $"capsule '{meta.Name}' was suspended again since this file was made; " +
                $"resume its latest file ({rec.Detail})");
        if (runtime.Find(meta.Name) is not null)
            throw new InvalidOperationException($"capsule '{meta.Name}' already runs on {O.Host}");
        if (O.Serves.Length > 0) throw new ArgumentException($"{O.Host} is a gateway; capsules run on hosts");
        // The directory would refuse the claim too, but only after the restore: refused here, nothing is built.
        if (state.Hosts.GetValueOrDefault(O.Host) is { Cordoned: true })
            throw new InvalidOperationException(DirectoryState.CordonedError(O.Host, "nothing was resumed"));
        return rec;
    }

    [LoggerMessage(EventId = 342, Level = LogLevel.Information,
        Message = "resumed {Name} from {File} (signed by {Signer}) as pid {Pid}")]
    static partial void LogResumed(ILogger logger, string name, string file, string signer, int pid);
}
