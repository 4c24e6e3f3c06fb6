using Capsule.Agent.Checkpoint;
using Capsule.Agent.Faults;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Agent.Migration;

/// <summary>
/// The target's half of <see cref="StagedFiles"/>: the capsule's files, sent ahead of the freeze, wait in a folder
/// of their own; the image then names those still current, and only they join the capsule's folder.
/// </summary>
internal sealed partial class MigrationTarget
{
    string StageFolder(string name) => Path.Combine(O.StateDir, "migrations", name + ".staged");

    /// <summary>
    /// Takes the capsule's files ahead of its image: checked as an image is (confined names, folders and
    /// regular files only, the checksum over every byte), kept aside until the image comes or the move aborts.
    /// </summary>
    public async Task<StageReply> StageAsync(IAsyncStreamReader<ImageChunk> stream, Func<ImageChunk, Task> authorize,
        CancellationToken ct)
    {
        if (!await stream.MoveNext(ct)) throw new ArgumentException("empty stage stream");
        var head = stream.Current;
        if (Names.CapsuleNameError(head.Name) is { } bad) throw new ArgumentException(bad);
        await authorize(head);
        if (runtime.Find(head.Name) is not null)
            throw new InvalidOperationException($"capsule '{head.Name}' already runs on {O.Host}");
        var work = StageFolder(head.Name);
        DropStaged(head.Name);
        PrivateFiles.CreateFolder(work);
        await using var files = new ChunkReader<ImageChunk>(stream, c => c.Data, c => c.Sha256);
        var budget = ImageBudget.For(O.StateDir, O.MaxImageBytes);
        // A staged archive has only files/; an images/ entry would land in a folder nothing reads, deleted with it.
        await ImageArchive.ExtractCheckedAsync(files, "the capsule's staged files", files.VerifyAsync, budget,
            Path.Combine(work, "images"), Path.Combine(work, "files"), ct, OwnRoot.From(head.RootFs));
        await faults.HitAsync(FaultPoints.TargetStage);
        return new StageReply { Bytes = files.Received };
    }

    /// <summary>
    /// Moves the staged files the image names as current into the capsule's folder. The names come from
    /// another host: each must stay inside both folders and name a file that was staged.
    /// </summary>
    void TakeStaged(string name, IReadOnlyCollection<string> staged, string dir)
    {
        if (staged.Count == 0) return;
        var from = Path.GetFullPath(Path.Combine(StageFolder(name), "files"));
        var to = Path.GetFullPath(dir);
        foreach (var rel in staged)
        {
            var src = Confined(from, rel);
            var dest = Confined(to, rel);
            if (!File.Exists(src)) throw new InvalidDataException($"the image keeps staged file '{rel}', never staged");
            if (File.Exists(dest) || Directory.Exists(dest))
                throw new InvalidDataException($"the image both keeps staged file '{rel}' and sends it");
            // The image may hold links (a capsule's own root, UpperLayer): a staged file never goes through one.
            for (var p = Path.GetDirectoryName(dest)!; p.Length > to.Length; p = Path.GetDirectoryName(p)!)
                if (UpperLayer.IsLink(p)) throw new InvalidDataException($"staged file '{rel}' is behind a link");
            PrivateFiles.CreateFolder(Path.GetDirectoryName(dest)!);
            File.Move(src, dest);
        }
    }

    static string Confined(string root, string rel)
    {
        var path = Path.GetFullPath(Path.Combine(root, rel));
        if (rel.Contains('\0') || !path.StartsWith(root + "/", StringComparison.Ordinal))
            throw new InvalidDataException($"staged file '{rel}' points outside the capsule");
        return path;
    }

    void DropStaged(string name)
    {
        var work = StageFolder(name);
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
    }
}
