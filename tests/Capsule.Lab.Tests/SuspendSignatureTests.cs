using System.Buffers.Binary;
using System.Net;
using System.Security.Cryptography;
using Capsule.Rpc;
using Capsule.Trust;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Suspend files signed under the cluster's keys (issue 10, item 5): written with a host's identity, a file
/// carries its certificate and an ECDSA signature of its SHA-256, and a resuming agent with a cluster identity
/// accepts it only from a host of its own cluster, unchanged. No lab: temporary files and CAs, removed after.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class SuspendSignatureTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-sign-").FullName;
    int _next;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string NewPath(string name) => Path.Combine(_dir, $"{Interlocked.Increment(ref _next)}-{name}");

    ClusterCa NewCa(string name) => ClusterCa.Create(NewPath(name));

    static TlsIdentity Identity(IssuedFiles f) => TlsIdentity.Load(f.Ca, f.Cert, f.Key);

    static TlsIdentity Host(ClusterCa ca, string name) => Identity(ca.IssueHost(name, IPAddress.Loopback));

    static SuspendMeta Meta() => new(SuspendFile.Version, "id-1", "web", "100.64.0.5", ["sleep", "1"], "h1",
        new DateTime(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc), [new(1, "sleep 1")], [], 0);

    async Task<string> Write(TlsIdentity? signer)
    {
        var tar = NewPath("payload.tar");
        await File.WriteAllBytesAsync(tar, Enumerable.Range(0, 700).Select(i => (byte)(i * 7)).ToArray());
        var file = NewPath("web.capsule");
        await SuspendFile.WriteAsync(file, Meta(), tar, CancellationToken.None, signer);
        return file;
    }

    /// <summary>What a resuming agent does: open, check the signer against its cluster, read and verify all.</summary>
    static async Task<string> Resume(string file, TlsIdentity? cluster)
    {
        await using var r = await SuspendFile.OpenAsync(file, CancellationToken.None);
        var signer = r.CheckSigner(cluster);
        await r.CopyToAsync(Stream.Null);
        await r.VerifyAsync(CancellationToken.None);
        return signer;
    }

    [Fact]
    public async Task A_file_signed_by_a_host_of_the_cluster_verifies()
    {
        using var ca = NewCa("ca");
        using var h1 = Host(ca, "h1");
        using var h2 = Host(ca, "h2");
        var file = await Write(h1);
        Assert.Equal("h1", await Resume(file, h2));
        Assert.Equal("host h1", await Resume(file, null)); // without a cluster identity: the claim, unchecked
        await using var r = await SuspendFile.OpenAsync(file, CancellationToken.None);
        Assert.Equal("host h1", r.SignerName);
        Assert.Equal(2, File.ReadAllBytes(file)[7]);
    }

    [Fact]
    public async Task A_signed_file_with_any_byte_changed_is_refused()
    {
        using var ca = NewCa("ca");
        using var h1 = Host(ca, "h1");
        var good = await File.ReadAllBytesAsync(await Write(h1));
        var bad = NewPath("bad.capsule");
        for (var i = 0; i < good.Length; i++)
        {
            var d = good.ToArray();
            d[i] ^= (byte)(1 + i % 255);
            await File.WriteAllBytesAsync(bad, d);
            await Assert.ThrowsAsync<InvalidDataException>(() => Resume(bad, h1));
        }
    }

    [Fact]
    public async Task A_forged_file_resigned_with_the_right_checksum_but_another_key_is_refused()
    {
        using var ca = NewCa("ca");
        using var h1 = Host(ca, "h1");
        var d = await File.ReadAllBytesAsync(await Write(h1));
        // The signature replaced by one of the same digest under a key that is not the certificate's.
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var sealedEnd = FindSealedEnd(d);
        var sigLen = BinaryPrimitives.ReadUInt16BigEndian(d.AsSpan(sealedEnd + 2));
        Assert.Equal(64, sigLen);
        other.SignHash(SHA256.HashData(d.AsSpan(0, sealedEnd - 32))).CopyTo(d, d.Length - sigLen);
        var file = NewPath("forged.capsule");
        await File.WriteAllBytesAsync(file, d);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Resume(file, h1));
        Assert.Contains("its signature does not verify", e.Message);
    }

    /// <summary>Where the checksum ends: 12 + metadata + payload + 32.</summary>
    static int FindSealedEnd(byte[] d)
    {
        var metaLen = (int)BinaryPrimitives.ReadUInt32BigEndian(d.AsSpan(8));
        return 12 + metaLen + 700 + 32;
    }

    [Fact]
    public async Task A_file_signed_under_another_ca_is_refused()
    {
        using var ours = NewCa("ours");
        using var theirs = NewCa("theirs");
        using var h1 = Host(ours, "h1");
        using var forger = Host(theirs, "h1");
        var file = await Write(forger);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Resume(file, h1));
        Assert.Contains("not signed by a host of this cluster", e.Message);
    }

    [Fact]
    public async Task A_file_signed_by_an_operator_or_the_directory_is_refused()
    {
        using var ca = NewCa("ca");
        using var h1 = Host(ca, "h1");
        using var admin = Identity(ca.IssueOperator("alice", PeerKind.Admin));
        using var dir = Identity(ca.IssueHost("dir", IPAddress.Loopback, PeerKind.Directory));
        foreach (var signer in new[] { admin, dir })
        {
            var file = await Write(signer);
            var e = await Assert.ThrowsAsync<InvalidDataException>(() => Resume(file, h1));
            Assert.Contains("not signed by a host of this cluster", e.Message);
        }
    }

    [Fact]
    public async Task An_unsigned_file_is_refused_with_a_cluster_identity_and_accepted_without()
    {
        using var ca = NewCa("ca");
        using var h1 = Host(ca, "h1");
        var file = await Write(null);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Resume(file, h1));
        Assert.Contains("not signed by a host of this cluster", e.Message);
        Assert.Equal("unsigned", await Resume(file, null));
    }

    [Fact]
    public async Task A_trailer_claiming_too_much_is_refused_before_it_is_read()
    {
        var d = await File.ReadAllBytesAsync(await Write(null));
        BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(d.Length - 4), ushort.MaxValue);
        BinaryPrimitives.WriteUInt16BigEndian(d.AsSpan(d.Length - 2), 64);
        var file = NewPath("big.capsule");
        await File.WriteAllBytesAsync(file, [.. d, .. new byte[ushort.MaxValue + 64]]);
        var e = await Assert.ThrowsAsync<InvalidDataException>(() => Resume(file, null));
        Assert.Contains("signature trailer is malformed", e.Message);
    }

    [Fact]
    public async Task A_version_1_file_is_still_read_as_unsigned()
    {
        var d = await File.ReadAllBytesAsync(await Write(null));
        byte[] body = [.. d[..(d.Length - 4 - 32)]];
        body[7] = 1;
        var file = NewPath("v1.capsule");
        await File.WriteAllBytesAsync(file, [.. body, .. SHA256.HashData(body)]);
        Assert.Equal("unsigned", await Resume(file, null));
        using var ca = NewCa("ca");
        using var h1 = Host(ca, "h1");
        await Assert.ThrowsAsync<InvalidDataException>(() => Resume(file, h1));
    }
}
