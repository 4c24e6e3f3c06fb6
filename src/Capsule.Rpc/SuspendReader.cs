using System.Security.Cryptography;

namespace Capsule.Rpc;

/// <summary>
/// A suspend file open for a resume: its metadata, and its payload (the image's tar) as a stream
/// that hashes what it hands out, after the header and metadata it has hashed already. One open
/// file, each byte read once: the checksum <see cref="VerifyAsync"/> checks is over the very bytes
/// that were unpacked, so a file changed between a check and the unpacking cannot slip through.
/// What was unpacked is to be trusted only once it has passed.
/// </summary>
public sealed class SuspendReader : Stream
{
    readonly FileStream _fs;
    readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    readonly string _name;
    long _left;

    internal SuspendReader(FileStream fs, SuspendMeta meta, byte[] head, string name)
    {
        _fs = fs;
        Meta = meta;
        _name = name;
        _left = meta.PayloadBytes;
        _hash.AppendData(head);
    }

    public SuspendMeta Meta { get; }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct = default)
    {
        if (_left == 0 || buffer.IsEmpty) return 0;
        var n = await _fs.ReadAsync(buffer[..(int)Math.Min(buffer.Length, _left)], ct);
        if (n == 0) throw new InvalidDataException($"{_name} is truncated");
        _hash.AppendData(buffer.Span[..n]);
        _left -= n;
        return n;
    }

    /// <summary>
    /// Reads what the reader left of the payload, then the checksum; throws <see cref="InvalidDataException"/>
    /// when it does not match everything before it.
    /// </summary>
    public async Task VerifyAsync(CancellationToken ct)
    {
        var buf = new byte[1 << 20];
        while (await ReadAsync(buf, ct) > 0) { }
        var want = new byte[SuspendFile.HashSize];
        await _fs.ReadExactlyAsync(want, ct);
        if (!_hash.GetHashAndReset().AsSpan().SequenceEqual(want))
            throw new InvalidDataException(
                $"{_name} fails its checksum: it was changed or damaged after it was written");
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken ct) =>
        ReadAsync(buffer.AsMemory(offset, count), ct).AsTask();

    public override int Read(byte[] buffer, int offset, int count) =>
        ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => Meta.PayloadBytes;
    public override long Position { get => Meta.PayloadBytes - _left; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash.Dispose();
            _fs.Dispose();
        }
        base.Dispose(disposing);
    }
}
