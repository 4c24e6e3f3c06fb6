using System.Security.Cryptography;
using Capsule.Protos;
using Google.Protobuf;
using Grpc.Core;

namespace Capsule.Rpc;

/// <summary>
/// A suspend file over gRPC, either way between the CLI and an agent (they share no file system):
/// a header (<see cref="FileChunk.Size"/>), the bytes in chunks cut and hashed by <see cref="ChunkStream"/>
/// (the machinery migration streams its images with), then their SHA-256. The checksum covers the
/// transfer; the file's own checksum (<see cref="SuspendFile"/>) is checked by the receiver after it.
/// </summary>
public static class FileTransfer
{
    /// <summary>
    /// Sends <paramref name="head"/> with the file's size, then the file; <paramref name="progress"/> hears the
    /// bytes sent so far. Returns the size.
    /// </summary>
    public static async Task<long> SendAsync(IAsyncStreamWriter<FileChunk> to, string path, FileChunk head,
        Action<long>? progress, CancellationToken ct)
    {
        await using var file = File.OpenRead(path);
        head.Size = file.Length;
        await to.WriteAsync(head, ct);
        long sent = 0;
        await using var chunks = new ChunkStream(async (data, token) =>
        {
            await to.WriteAsync(new FileChunk { Data = ByteString.CopyFrom(data.Span) }, token);
            sent += data.Length;
            progress?.Invoke(sent);
        });
        await file.CopyToAsync(chunks, ChunkStream.ChunkSize, ct);
        var sha = await chunks.FinishAsync(ct);
        // A file that changed while it was read ends up another size than announced: the receiver refuses it.
        await to.WriteAsync(new FileChunk { Sha256 = sha }, ct);
        return sent;
    }

    /// <summary>
    /// After the header: writes the data to <paramref name="to"/>, hashing it on the way. Throws
    /// <see cref="InvalidDataException"/> if it is cut short, longer than <paramref name="size"/> or corrupt.
    /// </summary>
    public static async Task ReceiveAsync(IAsyncStreamReader<FileChunk> from, long size, Stream to,
        Action<long>? progress, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long received = 0;
        while (await from.MoveNext(ct))
        {
            var chunk = from.Current;
            if (chunk.Sha256.Length > 0)
            {
                if (received != size)
                    throw new InvalidDataException($"the transfer ended after {received} of {size} bytes");
                var got = Convert.ToHexStringLower(hash.GetHashAndReset());
                if (got != chunk.Sha256)
                    throw new InvalidDataException($"corrupt transfer: checksum {got[..12]}… " +
                        $"does not match the sender's {chunk.Sha256[..Math.Min(12, chunk.Sha256.Length)]}…");
                return;
            }
            if (received + chunk.Data.Length > size)
                throw new InvalidDataException($"the sender sent more than the {size} bytes it announced");
            hash.AppendData(chunk.Data.Span);
            await to.WriteAsync(chunk.Data.Memory, ct);
            received += chunk.Data.Length;
            progress?.Invoke(received);
        }
        throw new InvalidDataException(
            $"the transfer was cut short after {received} of {size} bytes (it ended without its checksum)");
    }
}
