using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

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
}

/// <summary>The metadata as JSON, source-generated: the native (AOT) binary has no reflection serializer.</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(SuspendMeta))]
internal sealed partial class SuspendMetaJson : JsonSerializerContext;

/// <summary>
/// One self-contained file holding a suspended capsule (docs/suspend-format.md):
/// <code>
/// "CAPSULE" 0x01 | u32 metadata length | metadata (JSON) | payload (tar: images/, files/) | SHA-256 of all before
/// </code>
/// The checksum covers the header and metadata too, so a tampered name or locator is caught as
/// surely as a damaged image; a truncated file fails the same check.
/// </summary>
public static class SuspendFile
{
    public const byte Version = 1;
    static readonly byte[] Magic = "CAPSULE"u8.ToArray();
    internal const int HashSize = 32;

    public static async Task WriteAsync(string path, SuspendMeta meta, string payloadTar, CancellationToken ct)
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
            await fs.WriteAsync(sha.GetHashAndReset(), ct);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true); // the file appears whole or not at all
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
    /// read once, hashed as it is read (<see cref="SuspendReader"/>).
    /// </summary>
    public static async Task<SuspendReader> OpenAsync(string path, CancellationToken ct, string? shownAs = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no such file: {path}");
        var name = shownAs ?? path;
        var fs = File.OpenRead(path);
        try
        {
            var (meta, head) = await ReadHeadAsync(fs, name, ct);
            return new SuspendReader(fs, meta, head, name);
        }
        catch
        {
            await fs.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// The header and metadata of the file open in <paramref name="fs"/> (at its start), checked against its
    /// length; also the bytes they were read from, which the file's checksum covers.
    /// </summary>
    internal static async Task<(SuspendMeta Meta, byte[] Head)> ReadHeadAsync(FileStream fs, string name,
        CancellationToken ct)
    {
        var head = new byte[Magic.Length + 1 + 4];
        if (await fs.ReadAtLeastAsync(head, head.Length, throwOnEndOfStream: false, ct) < head.Length
            || !head.AsSpan(0, Magic.Length).SequenceEqual(Magic))
            throw new InvalidDataException($"{name} is not a capsule suspend file");
        if (head[Magic.Length] != Version)
            throw new InvalidDataException(
                $"{name} has format version {head[Magic.Length]}; this build reads version {Version}");
        var metaLen = BinaryPrimitives.ReadUInt32BigEndian(head.AsSpan(Magic.Length + 1));
        if (metaLen > 16 << 20 || head.Length + metaLen + HashSize > fs.Length)
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
        if (head.Length + metaLen + meta.PayloadBytes + HashSize != fs.Length)
            throw new InvalidDataException($"{name} is truncated or damaged: {fs.Length} bytes, " +
                $"expected {head.Length + metaLen + meta.PayloadBytes + HashSize}");
        return (meta, all);
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
