using System.Security.Cryptography;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// A container capsule on a root file system of its own (issue 13, `create --rootfs DIR`): an OCI image, made and
/// unpacked with umoci from Debian's packages, holding a static busybox and a file to serve. The capsule sees the
/// image and nothing of the host's file system, and serves a download that goes on across a move.
/// </summary>
[Collection("lab")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ContainerImageTests(LabFixture lab) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-oci-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static async Task Umoci(params string[] args) => (await Cli.Exec("umoci", args)).Ok();

    /// <summary>
    /// An OCI image layout with one image, "bb:1": busybox and its applets, and <paramref name="blob"/> as /www/blob;
    /// then unpacked as a runtime bundle, whose rootfs/ a capsule runs on. Returns the rootfs folder.
    /// </summary>
    async Task<string> ImageAsync(byte[] blob)
    {
        var layout = Path.Combine(_dir, "layout");
        var build = Path.Combine(_dir, "build");
        var bundle = Path.Combine(_dir, "bundle");
        await Umoci("init", "--layout", layout);
        await Umoci("new", "--image", layout + ":bb");
        await Umoci("unpack", "--image", layout + ":bb", build);
        var root = Path.Combine(build, "rootfs");
        Directory.CreateDirectory(Path.Combine(root, "bin"));
        Directory.CreateDirectory(Path.Combine(root, "www"));
        File.Copy("/bin/busybox", Path.Combine(root, "bin", "busybox"));
        foreach (var applet in (string[])["sh", "ls", "cat", "httpd", "id"])
            File.CreateSymbolicLink(Path.Combine(root, "bin", applet), "busybox");
        await File.WriteAllBytesAsync(Path.Combine(root, "www", "blob"), blob);
        await Umoci("repack", "--image", layout + ":bb", build);
        await Umoci("tag", "--image", layout + ":bb", "1");
        await Umoci("unpack", "--image", layout + ":1", bundle);
        return Path.Combine(bundle, "rootfs");
    }

    [Fact]
    public async Task A_capsule_on_an_oci_image_sees_only_the_image_and_serves_a_download_across_a_move()
    {
        var blob = new byte[60 << 20];
        Random.Shared.NextBytes(blob);
        var want = Convert.ToHexStringLower(SHA256.HashData(blob));
        var rootfs = await ImageAsync(blob);
        var got = Path.Combine(Path.GetTempPath(), $"{lab.Name}-oci-got");
        try
        {
            var (web, _) = await lab.CreateWith("bbweb", "h1", ["--rootfs", rootfs], "/bin/httpd", "-f", "-p",
                "8080", "-h", "/www");
            await lab.Create("bbget", "h3", "sleep", "infinity");
            await lab.WaitForPort("bbget", web, 8080);
            // The image's files, the capsule's own mounts and its own name files (docs/dns.md); not the host's
            // /usr or /home, nor the host's /etc.
            static async Task<string[]> Ls(LabFixture lab, string dir) =>
                (await lab.InCapsule("bbweb", "/bin/ls", dir)).Ok().Out.Split('\n',
                    StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(["bin", "dev", "etc", "proc", "sys", "www"], (await Ls(lab, "/")).Order());
            Assert.Equal(["hosts", "resolv.conf"], (await Ls(lab, "/etc")).Order());
            Assert.Equal("0\n", (await lab.InCapsule("bbweb", "/bin/id", "-u")).Ok().Out);

            var get = lab.InCapsule("bbget", "curl", "-sS", "--fail", "--limit-rate", "10M", "-o", got,
                $"http://{web}:8080/blob");
            await LabFixture.Until(() => Task.FromResult(File.Exists(got) && new FileInfo(got).Length > 5 << 20),
                "the download to be under way");
            var m = await lab.Migrate("bbweb", "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.True(new FileInfo(got).Length < blob.Length, "the download ended before the move");
            (await get).Ok();
            Assert.Equal(want, Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(got))));
        }
        finally
        {
            await lab.Run("rm", "bbweb");
            await lab.Run("rm", "bbget");
            File.Delete(got);
        }
    }
}
