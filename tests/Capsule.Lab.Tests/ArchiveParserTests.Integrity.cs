using System.Formats.Tar;
using Capsule.Agent.Checkpoint;
using Capsule.Protos;
using Capsule.Rpc;
using Google.Protobuf;
using Grpc.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Images checked as they are unpacked (issue 10, item 5): the checksum is over the bytes that were
/// unpacked, one read, and an image that fails it leaves nothing behind; what is unpacked is 0600
/// (folders 0700) from its creation.
/// </summary>
public sealed partial class ArchiveParserTests
{
    /// <summary>A suspend file whose payload is a real image: folders, files, a named pipe.</summary>
    async Task<(string File, byte[] Bytes)> ImageSuspendFile()
    {
        var src = NewDir();
        var tar = await Tar(Path.Combine(src, "payload.tar"),
            new PaxTarEntry(TarEntryType.Directory, "images/d"), FileEntry("images/d/core-1.img", Inet(70_000)),
            new PaxTarEntry(TarEntryType.Directory, "files/logs") { Mode = (UnixFileMode)0x3ED }, // 01755
            FileEntry("files/logs/out", Inet(3000)),
            new PaxTarEntry(TarEntryType.RegularFile, "files/run") { Mode = (UnixFileMode)0x9ED }, // 04755
            new PaxTarEntry(TarEntryType.Fifo, "files/pipe") { Mode = (UnixFileMode)0x1B6 }); // 0666
        var file = Path.Combine(src, "web.capsule");
        await SuspendFile.WriteAsync(file, Meta(), tar, CancellationToken.None);
        return (file, await File.ReadAllBytesAsync(file));
    }

    static async Task ExtractChecked(string file, Target t)
    {
        await using var reader = await SuspendFile.OpenAsync(file, CancellationToken.None);
        await ImageArchive.ExtractCheckedAsync(reader, file, reader.VerifyAsync, AgentsBudget(t), t.Images,
            t.Capsule, CancellationToken.None);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task Unpacked_images_are_0600_and_capsule_files_keep_their_permissions_only()
    {
        var (file, _) = await ImageSuspendFile();
        var t = NewTarget();
        await ExtractChecked(file, t);
        Assert.Equal(Inet(70_000), await File.ReadAllBytesAsync(Path.Combine(t.Images, "d", "core-1.img")));
        var images = Tree(t.Images).Append(t.Images).Append(t.Capsule).ToList();
        Assert.Equal(4, images.Count);
        foreach (var p in images)
        {
            var folder = Directory.Exists(p);
            Assert.True((folder ? PrivateFiles.FolderMode : PrivateFiles.FileMode) == File.GetUnixFileMode(p),
                $"{p} is {File.GetUnixFileMode(p)}");
        }
        // CRIU restores a file a process had open only with the mode it had; never setuid, setgid or sticky.
        string Mode(string rel) => Convert.ToString((int)File.GetUnixFileMode(Path.Combine(t.Capsule, rel)), 8);
        Assert.Equal(("755", "644", "755", "666"), (Mode("logs"), Mode("logs/out"), Mode("run"), Mode("pipe")));
    }

    /// <summary>
    /// A byte changed in a file's data (the archive still parses) or in a header (it does not): the file's
    /// checksum refuses it, by name, and nothing unpacked is left.
    /// </summary>
    [Fact]
    public async Task A_tampered_image_leaves_nothing_unpacked()
    {
        var (file, good) = await ImageSuspendFile();
        var payloadAt = good.Length - 32 - (int)(await SuspendFile.ReadMetaAsync(file, false, default)).PayloadBytes;
        // In core-1.img's data; in the first entry's header (its name).
        foreach (var at in new[] { payloadAt + 3 * 512 + 20_000, payloadAt + 10 })
        {
            var bad = good.ToArray();
            bad[at] ^= 0x5A;
            var tampered = Path.Combine(NewDir(), "tampered.capsule");
            await File.WriteAllBytesAsync(tampered, bad);
            var t = NewTarget();
            var e = await Assert.ThrowsAsync<InvalidDataException>(() => ExtractChecked(tampered, t));
            Assert.Contains($"{tampered} fails its checksum", e.Message);
            Assert.False(Directory.Exists(t.Images), "images left after a failed checksum");
            Assert.False(Directory.Exists(t.Capsule), "capsule files left after a failed checksum");
            AssertConfined(t);
        }
    }

    /// <summary>A migration's image in chunks, as a target takes it: one changed leaves nothing unpacked.</summary>
    [Fact]
    public async Task A_corrupt_image_transfer_leaves_nothing_unpacked()
    {
        var chunks = await ChunksOf((await ImageSuspendFile()).File);
        var good = NewTarget();
        await Receive(chunks, good);
        Assert.Equal(Inet(3000), await File.ReadAllBytesAsync(Path.Combine(good.Capsule, "logs", "out")));

        var data = chunks[0].Data.ToByteArray();
        data[3 * 512 + 20_000] ^= 0x01;
        chunks[0] = new ImageChunk { Data = ByteString.CopyFrom(data) };
        var t = NewTarget();
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Receive(chunks, t));
        Assert.Contains("checksum", e.Message);
        Assert.False(Directory.Exists(t.Images) || Directory.Exists(t.Capsule), "left after a corrupt transfer");
    }

    /// <summary>
    /// An image streamed with no length declared (a migration's) past the receiver's budget: refused at the entry
    /// that passes it, before its bytes are written, and nothing unpacked is left.
    /// </summary>
    [Fact]
    public async Task An_image_past_the_budget_is_refused_and_leaves_nothing_unpacked()
    {
        var chunks = await ChunksOf((await ImageSuspendFile()).File);
        // The image holds 70,000 + 3,000 bytes of files: it fits 73,000, not 72,999.
        await Receive(chunks, NewTarget(), new ImageBudget(73_000, "a test's"));
        var t = NewTarget();
        var e = await Assert.ThrowsAsync<InvalidDataException>(
            () => Receive(chunks, t, new ImageBudget(72_999, "a test's")));
        Assert.Contains("the image needs more than 72999 bytes (a test's): entry 'files/logs/out' adds 3000 to 70000",
            e.Message);
        Assert.False(Directory.Exists(t.Images) || Directory.Exists(t.Capsule), "left after a refused image");
    }

    static async Task<List<ImageChunk>> ChunksOf(string suspendFile)
    {
        var tar = new MemoryStream();
        await using (var reader = await SuspendFile.OpenAsync(suspendFile, CancellationToken.None))
            await reader.CopyToAsync(tar);
        return await ChunksOfTar(tar.ToArray());
    }

    /// <summary>A tar archive as a migration streams it: in chunks, then the checksum.</summary>
    static async Task<List<ImageChunk>> ChunksOfTar(byte[] tar)
    {
        var chunks = new List<ImageChunk>();
        await using var sender = new ChunkStream((d, _) =>
        {
            chunks.Add(new ImageChunk { Data = ByteString.CopyFrom(d.Span) });
            return Task.CompletedTask;
        });
        await sender.WriteAsync(tar);
        chunks.Add(new ImageChunk { Sha256 = await sender.FinishAsync(CancellationToken.None) });
        return chunks;
    }

    /// <summary>What an agent with the default MaxImageBytes allows where the test unpacks.</summary>
    static ImageBudget AgentsBudget(Target t) =>
        ImageBudget.For(t.Root, Capsule.Agent.AgentOptions.DefaultMaxImageBytes);

    static async Task Receive(List<ImageChunk> chunks, Target t, ImageBudget? budget = null,
        Capsule.Agent.Linux.OwnRoot? owners = null)
    {
        await using var image = new ChunkReader<ImageChunk>(new Chunks(chunks), c => c.Data, c => c.Sha256);
        await ImageArchive.ExtractCheckedAsync(image, "the image", image.VerifyAsync, budget ?? AgentsBudget(t),
            t.Images, t.Capsule, CancellationToken.None, owners);
    }

    sealed class Chunks(List<ImageChunk> list) : IAsyncStreamReader<ImageChunk>
    {
        int _at = -1;
        public ImageChunk Current => list[_at];
        public Task<bool> MoveNext(CancellationToken cancellationToken) => Task.FromResult(++_at < list.Count);
    }
}
