using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using System.Text.Json.Serialization;
using Capsule.Trust;

namespace Capsule.Rpc;

/// <summary>What a suspend file says about the capsule inside it (`capsule inspect` prints it).</summary>
public sealed record SuspendMeta(
    int Format,
    string Id,
    string Name,
    string Locator,
    string[] Command,
    string SuspendedFrom,
    DateTime Created,
    List<SuspendMeta.Proc> Processes,
    List<string> Connections,
    long PayloadBytes)
{
    public sealed record Proc(int Pid, string Command);
    public bool UdpDrop { get; init; }

    /// <summary>A container capsule's own root (`create --rootfs`): absent for a capsule on the host's root.</summary>
    public RootMeta? Root { get; init; }

    /// <summary>Its cgroup limits (`create --memory --cpus --pids`), made again where it is resumed.</summary>
    public LimitsMeta? Limits { get; init; }

    /// <summary>
    /// The lower layer it needs on the resuming host (the file carries only its own writable layer) and the host
    /// ids its user namespace maps to, which own the files of that layer.
    /// </summary>
    public sealed record RootMeta(string Lower, uint IdBase, uint IdCount);

    public sealed record LimitsMeta(long MemoryBytes, uint CpuMillis, uint Pids);
}

/// <summary>The metadata as JSON, source-generated: the native (AOT) binary has no reflection serializer.</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(SuspendMeta))]
internal sealed partial class SuspendMetaJson : JsonSerializerContext;

/// <summary>
/// One self-contained file holding a suspended capsule (docs/suspend-format.md):
/// <code>
/// "CAPSULE" 0x02 | u32 metadata length | metadata (JSON) | payload (tar: images/, files/) | SHA-256 of all before
///   | u16 certificate length | u16 signature length | signer's certificate (DER) | ECDSA signature of the SHA-256
/// </code>
/// The checksum covers the header and metadata too, so a tampered name or locator is caught as
/// surely as a damaged image; a truncated file fails the same check. The checksum stops damage, not a forger
/// (anyone can compute SHA-256): the signature by a host's key, under the cluster CA, does. An agent without a
/// cluster identity writes an empty trailer (both lengths 0). Version 1 files (no trailer) are still read.
/// </summary>
public static class SuspendFile
{
    public const byte Version = 2;
    const byte Unsigned1 = 1;
    static readonly byte[] Magic = "CAPSULE"u8.ToArray();
    internal const int HashSize = 32;
    /// <summary>The trailer's two length fields.</summary>
    internal const int TrailerHead = 4;
    /// <summary>Bounds on what a trailer may claim: a cluster certificate is under 1 KiB, a P-256 signature 64
    /// bytes; the bounds leave room for longer chains of names and larger curves, not for a memory bomb.</summary>
    internal const int MaxCert = 16 << 10, MaxSignature = 512;

    /// <summary>
    /// Writes the file; with <paramref name="signer"/> (a host's cluster identity), signs its SHA-256 with the host's
    /// private key and carries the host's certificate so any host of the cluster can check who wrote it.
    /// </summary>
    public static async Task WriteAsync(string path, SuspendMeta meta, string payloadTar, CancellationToken ct,
        TlsIdentity? signer = null)
    {
        var tmp = path + ".partial";
        var metaBytes = JsonSerializer.SerializeToUtf8Bytes(
            meta with { PayloadBytes = new FileInfo(payloadTar).Length }, SuspendMetaJson.Default.SuspendMeta);
        using (var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            File.Delete(tmp); // a leftover of a write that failed: the new one is made 0600 from the start
            await using var fs = PrivateFiles.CreateNew(tmp);
            async Task Put(ReadOnlyMemory<byte> b)
            {
                sha.AppendData(b.Span);
                await fs.WriteAsync(b, ct);
            }
            var head = new byte[Magic.Length + 1 + 4];
            Magic.CopyTo(head, 0);
            head[Magic.Length] = Version;
            BinaryPrimitives.WriteUInt32BigEndian(head.AsSpan(Magic.Length + 1), (uint)metaBytes.Length);
            await Put(head);
            await Put(metaBytes);
            await using (var payload = File.OpenRead(payloadTar))
            {
                var buf = new byte[1 << 20];
                int n;
                while ((n = await payload.ReadAsync(buf, ct)) > 0) await Put(buf.AsMemory(0, n));
            }
            var digest = sha.GetHashAndReset();
            await fs.WriteAsync(digest, ct);
            await fs.WriteAsync(Trailer(digest, signer?.Certificate), ct);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true); // the file appears whole or not at all
    }

    /// <summary>The signature trailer: empty (two zero lengths) without a signer.</summary>
    static byte[] Trailer(byte[] digest, X509Certificate2? cert)
    {
        byte[] der = [], sig = [];
        if (cert is not null)
        {
            using var key = cert.GetECDsaPrivateKey()
                ?? throw new InvalidOperationException("this host's certificate has no ECDSA private key to sign with");
            der = cert.RawData;
            sig = key.SignHash(digest);
            // What a reader would refuse is not written: it would be a file no host can resume.
            if (der.Length > MaxCert || sig.Length > MaxSignature)
                throw new InvalidOperationException("this host's certificate or signature is too large to sign with");
        }
        var t = new byte[TrailerHead + der.Length + sig.Length];
        BinaryPrimitives.WriteUInt16BigEndian(t, (ushort)der.Length);
        BinaryPrimitives.WriteUInt16BigEndian(t.AsSpan(2), (ushort)sig.Length);
        der.CopyTo(t, TrailerHead);
        sig.CopyTo(t, TrailerHead + der.Length);
        return t;
    }

    /// <summary>
    /// Checks version and checksum and returns the metadata; throws <see cref="InvalidDataException"/> saying what is
    /// wrong. <paramref name="shownAs"/>: the file's name in those messages, when <paramref name="path"/> is only a
    /// copy (an agent's, of a file streamed from the CLI) and its user knows the file by another name.
    /// </summary>
    public static async Task<SuspendMeta> ReadMetaAsync(string path, bool verify, CancellationToken ct,
        string? shownAs = null)
    {
        await using var file = await OpenAsync(path, ct, shownAs);
        if (verify) await file.VerifyAsync(ct);
        return file.Meta;
    }

    /// <summary>
    /// Opens a suspend file to unpack it: its metadata checked as <see cref="ReadMetaAsync"/> does, its payload
    /// read once, hashed as it is read (<see cref="SuspendReader"/>), its signer's certificate read from the trailer.
    /// </summary>
    public static async Task<SuspendReader> OpenAsync(string path, CancellationToken ct, string? shownAs = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no such file: {path}");
        var name = shownAs ?? path;
        var fs = File.OpenRead(path);
        X509Certificate2? signer = null;
        try
        {
            var (meta, head, sealedEnd) = await ReadHeadAsync(fs, name, ct);
            byte[] signature = [];
            if (head[Magic.Length] != Unsigned1) (signer, signature) = await ReadTrailerAsync(fs, sealedEnd, name, ct);
            return new SuspendReader(fs, meta, head, name, signer, signature);
        }
        catch
        {
            signer?.Dispose();
            await fs.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// The header and metadata of the file open in <paramref name="fs"/> (at its start), checked against its
    /// length; also the bytes they were read from, which the file's checksum covers, and where the checksum ends.
    /// </summary>
    internal static async Task<(SuspendMeta Meta, byte[] Head, long SealedEnd)> ReadHeadAsync(FileStream fs,
        string name, CancellationToken ct)
    {
        var head = new byte[Magic.Length + 1 + 4];
        if (await fs.ReadAtLeastAsync(head, head.Length, throwOnEndOfStream: false, ct) < head.Length
            || !head.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            throw new InvalidDataException($"{name} is not a capsule suspend file");
        var version = head[Magic.Length];
        if (version is not (Version or Unsigned1))
            throw new InvalidDataException(
                $"{name} has format version {version}; this build reads versions {Unsigned1} and {Version}");
        var trailer = version == Unsigned1 ? 0 : TrailerHead; // at least the two lengths
        var metaLen = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(Magic.Length + 1));
        if (metaLen > 16 << 20 || head.Length + metaLen + HashSize + trailer > fs.Length)
            throw new InvalidDataException(
                $"{name} is truncated or damaged (its header is inconsistent with its size)");
        var all = new byte[head.Length + metaLen];
        head.CopyTo(all, 0);
        await fs.ReadExactlyAsync(all.AsMemory(head.Length), ct);
        SuspendMeta meta;
        try
        {
            meta = JsonSerializer.Deserialize(all.AsSpan(head.Length), SuspendMetaJson.Default.SuspendMeta)
                ?? throw new JsonException("empty");
        }
        catch (JsonException) { throw new InvalidDataException($"{name} is damaged (its metadata cannot be read)"); }
        if (!IsWhole(meta)) throw new InvalidDataException($"{name} is damaged (its metadata lacks a field)");
        var sealedEnd = head.Length + metaLen + meta.PayloadBytes + HashSize;
        if (meta.PayloadBytes < 0 || meta.PayloadBytes > fs.Length || sealedEnd + trailer > fs.Length
            || version == Unsigned1 && sealedEnd != fs.Length)
            throw new InvalidDataException($"{name} is truncated or damaged: {fs.Length} bytes, " +
                $"expected {sealedEnd + trailer}{(trailer > 0 ? " or more" : "")}");
        return (meta, all, sealedEnd);
    }

    /// <summary>
    /// The signature trailer at <paramref name="at"/> (after the checksum): the signer's certificate (null when
    /// unsigned) and the signature. Read apart from the sealed bytes, which the reader hashes in one pass.
    /// </summary>
    static async Task<(X509Certificate2? Signer, byte[] Signature)> ReadTrailerAsync(FileStream fs, long at,
        string name, CancellationToken ct)
    {
        var lengths = new byte[TrailerHead];
        if (await RandomAccess.ReadAsync(fs.SafeFileHandle, lengths, at, ct) != lengths.Length)
            throw new InvalidDataException($"{name} is truncated");
        int certLen = BinaryPrimitives.ReadUInt16BigEndian(lengths), sigLen = BinaryPrimitives.ReadUInt16BigEndian(
            lengths.AsSpan(2));
        if (certLen > MaxCert || sigLen > MaxSignature || certLen == 0 != (sigLen == 0))
            throw new InvalidDataException($"{name} is damaged (its signature trailer is malformed)");
        if (at + TrailerHead + certLen + sigLen != fs.Length)
            throw new InvalidDataException($"{name} is truncated or damaged: {fs.Length} bytes, " +
                $"expected {at + TrailerHead + certLen + sigLen}");
        if (certLen == 0) return (null, []);
        var rest = new byte[certLen + sigLen];
        if (await RandomAccess.ReadAsync(fs.SafeFileHandle, rest, at + TrailerHead, ct) != rest.Length)
            throw new InvalidDataException($"{name} is truncated");
        try
        {
            return (X509CertificateLoader.LoadCertificate(rest.AsSpan(0, certLen)), rest[certLen..]);
        }
        catch (CryptographicException)
        {
            throw new InvalidDataException($"{name} is damaged (its signer's certificate cannot be read)");
        }
    }

    /// <summary>
    /// Every field the agent and the CLI read is there. The JSON reader leaves a field that is missing or null as
    /// null whatever its declared type, and the checksum does not stop that: anyone can seal a file.
    /// </summary>
    static bool IsWhole(SuspendMeta m) =>
        m is { Id: not null, Name: not null, Locator: not null, Command: not null, SuspendedFrom: not null,
            Processes: not null, Connections: not null }
        && m.Command.All(c => c is not null) && m.Processes.All(p => p?.Command is not null)
        && m.Connections.All(c => c is not null);
}
