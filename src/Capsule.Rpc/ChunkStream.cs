using System.Security.Cryptography;

namespace Capsule.Rpc;

/// <summary>
/// A write-only stream that hands what is written to <paramref name="send"/> in chunks of
/// <see cref="ChunkSize"/> and hashes it on the way: the image goes from CRIU's files to the
/// network in one pass, with no archive on disk and no second read to checksum it.
/// </summary>
public sealed class ChunkStream(Func<ReadOnlyMemory<byte>, CancellationToken, Task> send) : Stream
{
    public const int ChunkSize = 1 << 20;
    readonly byte[] _buf = new byte[ChunkSize];
    readonly IncrementalHash _sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    int _used;

    public long Length_ { get; private set; }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct = default)
    {
        _sha.AppendData(data.Span);
        Length_ += data.Length;
        while (!data.IsEmpty)
        {
            var n = Math.Min(data.Length, ChunkSize - _used);
            data[..n].CopyTo(_buf.AsMemory(_used));
            _used += n;
            data = data[n..];
            if (_used == ChunkSize) await SendBufferAsync(ct);
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
        WriteAsync(buffer.AsMemory(offset, count), ct).AsTask();

    async Task SendBufferAsync(CancellationToken ct)
    {
        if (_used == 0) return;
        await send(_buf.AsMemory(0, _used), ct);
        _used = 0;
    }

    /// <summary>Sends what is buffered and returns the SHA-256 (hex) of everything written.</summary>
    public async Task<string> FinishAsync(CancellationToken ct)
    {
        await SendBufferAsync(ct);
        return Convert.ToHexStringLower(_sha.GetHashAndReset());
    }

    public override void Write(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("ChunkStream is written asynchronously");
    public override void Flush() { }
    public override Task FlushAsync(CancellationToken ct) => Task.CompletedTask;
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => Length_;
    public override long Position { get => Length_; set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing) _sha.Dispose();
        base.Dispose(disposing);
    }
}
