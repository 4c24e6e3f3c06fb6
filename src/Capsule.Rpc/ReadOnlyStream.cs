namespace Capsule.Rpc;

/// <summary>
/// A forward-only stream that is read once, asynchronously (TarReader reads what it is given that way), for the
/// readers that check what they hand on as it passes: <see cref="ChunkReader{T}"/>, <see cref="SuspendReader"/>.
/// A subclass gives <see cref="Stream.ReadAsync(Memory{byte}, CancellationToken)"/>, Length and Position.
/// </summary>
public abstract class ReadOnlyStream : Stream
{
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
        ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

    // A synchronous read is served all the same.
    public override int Read(byte[] buffer, int offset, int count) =>
        ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
