using System.Formats.Tar;
using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A container capsule's writable layer in an image (issue 13): its entries keep owners, modes, links, whiteouts
/// and opaque folders; an entry owned by an id not the capsule's, a device other than a whiteout, or an entry
/// behind a link is refused, and nothing is written outside the capsule's folder.
/// </summary>
public sealed partial class ArchiveParserTests
{
    static readonly OwnRoot Owners = new("/", 7 * OwnRoot.IdsPerCapsule, OwnRoot.IdsPerCapsule);
    static readonly int Root = (int)Owners.IdBase;

    static PaxTarEntry Owned(TarEntryType type, string name, int uid, string? link = null)
    {
        var e = new PaxTarEntry(type, name) { Uid = uid, Gid = uid, Mode = (UnixFileMode)0x1ED };
        if (link is not null) e.LinkName = link;
        return e;
    }

    static async Task<byte[]> TarBytes(params TarEntry[] entries)
    {
        var ms = new MemoryStream();
        await using (var w = new TarWriter(ms, leaveOpen: true))
            foreach (var e in entries)
                await w.WriteEntryAsync(e);
        return ms.ToArray();
    }

    static long Owner(string path)
    {
        var r = Cli.Exec("stat", ["-c", "%u", path]).GetAwaiter().GetResult().Ok();
        return long.Parse(r.Out.Trim());
    }

    static unsafe bool IsOpaque(string path)
    {
        byte v;
        return Native.lgetxattr(path, "trusted.overlay.opaque", &v, 1) == 1 && v == (byte)'y';
    }

    static unsafe void MarkOpaque(string path)
    {
        byte y = (byte)'y';
        Native.ThrowIfFailed(Native.lsetxattr(path, "trusted.overlay.opaque", &y, 1, 0), "mark opaque");
    }

    [Fact]
    public async Task A_capsules_layer_round_trips_with_owners_links_whiteouts_and_opaque_folders()
    {
        var src = NewDir();
        var images = Directory.CreateDirectory(Path.Combine(src, "images")).FullName;
        var cap = Directory.CreateDirectory(Path.Combine(src, "cap")).FullName;
        var etc = Directory.CreateDirectory(Path.Combine(cap, "upper", "etc")).FullName;
        var fresh = Directory.CreateDirectory(Path.Combine(cap, "upper", "srv")).FullName;
        await File.WriteAllTextAsync(Path.Combine(etc, "motd"), "hello");
        File.CreateSymbolicLink(Path.Combine(etc, "localtime"), "/usr/share/zoneinfo/UTC");
        Native.ThrowIfFailed(Native.mknod(Path.Combine(etc, "gone"), 0x2000, 0), "whiteout");
        MarkOpaque(fresh);
        foreach (var p in (string[])[cap + "/upper", etc, fresh, etc + "/motd", etc + "/localtime", etc + "/gone"])
            Native.ThrowIfFailed(Native.lchown(p, (uint)Root + 33, (uint)Root + 33), "chown");
        var tar = new MemoryStream();
        await ImageArchive.WriteAsync(tar, images, cap, CancellationToken.None);

        var t = NewTarget();
        await Receive(await ChunksOfTar(tar.ToArray()), t, owners: Owners);
        AssertConfined(t);
        var up = Path.Combine(t.Capsule, "upper");
        Assert.Equal("hello", await File.ReadAllTextAsync(Path.Combine(up, "etc", "motd")));
        Assert.Equal("/usr/share/zoneinfo/UTC", new FileInfo(Path.Combine(up, "etc", "localtime")).LinkTarget);
        Assert.Equal(Root + 33, Owner(Path.Combine(up, "etc", "motd")));
        Assert.Equal(Root + 33, Owner(Path.Combine(up, "srv")));
        Assert.True(IsOpaque(Path.Combine(up, "srv")), "the opaque mark was lost");
        Assert.False(IsOpaque(Path.Combine(up, "etc")), "a folder became opaque");
        Assert.Equal("0 0", (await Cli.Exec("stat", ["-c", "%t %T", Path.Combine(up, "etc", "gone")])).Ok().Out.Trim());
    }

    public static TheoryData<string, string> Refusals => new()
    {
        { "host root", "belongs to 0:0, not to the capsule's ids" },
        { "another capsule", "not to the capsule's ids" },
        { "a device", "a capsule's layer holds only folders, files, links, named pipes and whiteouts" },
        { "behind a link", "is inside a file or behind a link" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task A_layer_entry_not_the_capsules_is_refused_and_nothing_lands_outside(string what, string says)
    {
        var t = NewTarget();
        TarEntry[] entries = what switch
        {
            "host root" => [Owned(TarEntryType.RegularFile, "files/upper/etc-passwd", 0)],
            "another capsule" => [Owned(TarEntryType.RegularFile, "files/upper/x", Root + (int)OwnRoot.IdsPerCapsule)],
            "a device" => [new PaxTarEntry(TarEntryType.CharacterDevice, "files/upper/null")
                { Uid = Root, Gid = Root, DeviceMajor = 1, DeviceMinor = 3 }],
            _ => [Owned(TarEntryType.SymbolicLink, "files/upper/out", Root, t.Outside),
                  Owned(TarEntryType.RegularFile, "files/upper/out/planted", Root)],
        };
        var e = await Assert.ThrowsAsync<InvalidDataException>(
            async () => await Receive(await ChunksOfTar(await TarBytes(entries)), t, owners: Owners));
        Assert.Contains(says, e.Message);
        AssertConfined(t);
        Assert.False(File.Exists(Path.Combine(t.Outside, "planted")));
    }
}
