using System.Security.Cryptography;
using Google.Protobuf;
using Grpc.Core;

namespace Capsule.Rpc;

/// <summary>
/// The receiving end of a chunked, checksummed transfer (a suspend file between the CLI and an
/// agent, a migration's image): a read-only stream of the chunks' data that hashes every byte as
/// it arrives; the sender's SHA-256 comes last. Whatever a reader makes of the bytes (a file, an
/// unpacked image) is to be trusted only once <see cref="VerifyAsync"/> has passed: the check is
/// over the very bytes that were read, with no file written first and read again.
/// </summary>
public sealed class ChunkReader<T>(IAsyncStreamReader<T> from, Func<T, ByteString> data, Func<T, string> sha256,
    long? size = null, Func<long, Task>? onChunk = null) : ReadOnlyStream
{
    readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    ReadOnlyMemory<byte> _chunk;
    string? _senderSha;

    /// <summary>Bytes received so far.</summary>
    public long Received { get; private set; }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        if (buffer.IsEmpty) return 0;
        while (_chunk.IsEmpty)
            if (_senderSha is not null || !await NextChunkAsync(ct)) return 0;
        var n = Math.Min(buffer.Length, _chunk.Length);
        _chunk[..n].CopyTo(buffer);
        _chunk = _chunk[n..];
        return n;
    }

    /// <summary>False at the sender's checksum (the end of the data).</summary>
    async Task<bool> NextChunkAsync(CancellationToken ct)
    {
        if (!await from.MoveNext(ct))
            throw new InvalidDataException(size is { } s
                ? $"the transfer was cut short after {Received} of {s} bytes (it ended without its checksum)"
                : $"the transfer was cut short after {Received} bytes (it ended without its checksum)");
        var chunk = from.Current;
        if (sha256(chunk) is { Length: > 0 } sha)
        {
            if (size is { } s && Received != s)
                throw new InvalidDataException($"the transfer ended after {Received} of {s} bytes");
            _senderSha = sha;
            return false;
        }
        var bytes = data(chunk);
        if (size is { } most && Received + bytes.Length > most)
            throw new InvalidDataException($"the sender sent more than the {most} bytes it announced");
        _hash.AppendData(bytes.Span);
        _chunk = bytes.Memory;
        Received += bytes.Length;
        if (onChunk is not null) await onChunk(Received);
        return true;
    }

    /// <summary>
    /// Reads what the reader left unread, then compares the checksum of everything received with the sender's;
    /// throws <see cref="InvalidDataException"/> when the transfer was cut short, too long or corrupt.
    /// </summary>
    public async Task VerifyAsync(CancellationToken ct)
    {
        _chunk = default;
        while (_senderSha is null && await NextChunkAsync(ct)) _chunk = default;
        var want = _senderSha ?? "";
        var got = Convert.ToHexStringLower(_hash.GetHashAndReset());
        if (got != want)
            throw new InvalidDataException($"corrupt transfer: checksum {got[..12]}… " +
                $"does not match the sender's {want[..Math.Min(12, want.Length)]}…");
    }

    public override long Length => throw new NotSupportedException();
    public override long Position { get => Received - _chunk.Length; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _hash.Dispose();
        base.Dispose(disposing);
    }
}
