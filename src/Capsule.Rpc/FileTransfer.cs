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
        Func<long, Task>? onChunk = progress is null ? null : n =>
        {
            progress(n);
            return Task.CompletedTask;
        };
        await using var data = new ChunkReader<FileChunk>(from, c => c.Data, c => c.Sha256, size, onChunk);
        await data.CopyToAsync(to, ct);
        await data.VerifyAsync(ct);
    }
}
