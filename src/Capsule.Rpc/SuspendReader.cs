using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Capsule.Trust;

namespace Capsule.Rpc;

/// <summary>
/// A suspend file open for a resume: its metadata, and its payload (the image's tar) as a stream
/// that hashes what it hands out, after the header and metadata it has hashed already. One open
/// file, each byte read once: the checksum <see cref="VerifyAsync"/> checks is over the very bytes
/// that were unpacked, so a file changed between a check and the unpacking cannot slip through.
/// What was unpacked is to be trusted only once it has passed. The file's signer is checked in two steps: who it
/// is (<see cref="CheckSigner"/>, on opening: the certificate is known), and that its signature is over this
/// very digest (in <see cref="VerifyAsync"/>, once the digest is).
/// </summary>
public sealed class SuspendReader : ReadOnlyStream
{
    readonly FileStream _fs;
    readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    readonly string _name;
    readonly byte[] _signature;
    long _left;

    internal SuspendReader(FileStream fs, SuspendMeta meta, byte[] head, string name, X509Certificate2? signer,
        byte[] signature)
    {
        _fs = fs;
        Meta = meta;
        _name = name;
        Signer = signer;
        _signature = signature;
        _left = meta.PayloadBytes;
        _hash.AppendData(head);
    }

    public SuspendMeta Meta { get; }

    /// <summary>The certificate the file's trailer carries, null when unsigned; not yet checked by anyone.</summary>
    public X509Certificate2? Signer { get; }

    /// <summary>Who the signer's certificate says it is ("host h1"), or "unsigned"; a claim until checked.</summary>
    public string SignerName =>
        Signer is null ? "unsigned" : PeerIdentity.Of(Signer)?.ToString() ?? Signer.Subject;

    /// <summary>
    /// Refuses the file (<see cref="InvalidDataException"/>) unless it is signed by a host whose certificate chains to
    /// <paramref name="cluster"/>'s CA; returns that host's name. Without a cluster identity (an agent started
    /// without TLS has no CA to check against) any file passes, signed or not, and its signer's claim is returned.
    /// </summary>
    public string CheckSigner(TlsIdentity? cluster)
    {
        if (cluster is null) return SignerName;
        var refused = $"{_name} is not signed by a host of this cluster";
        if (Signer is null) throw new InvalidDataException($"{refused}: it is unsigned");
        // ClientAuth: what a host certificate is used for when it speaks for its host to others.
        var who = ClusterTrust.Validate(Signer, cluster.Ca, Oids.ClientAuth, out var why)
            ?? throw new InvalidDataException($"{refused}: {why}");
        if (who.Kind != PeerKind.Host) throw new InvalidDataException($"{refused}: it was signed by {who}");
        return who.Name;
    }

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
        var digest = _hash.GetHashAndReset();
        if (!digest.AsSpan().SequenceEqual(want))
            throw new InvalidDataException(
                $"{_name} fails its checksum: it was changed or damaged after it was written");
        if (Signer is not null && !SignatureVerifies(digest))
            throw new InvalidDataException($"{_name}: its signature does not verify (it was changed after it was " +
                "signed, or signed with another key than its certificate's)");
    }

    bool SignatureVerifies(byte[] digest)
    {
        try
        {
            using var key = Signer!.GetECDsaPublicKey();
            return key is not null && key.VerifyHash(digest, _signature);
        }
        catch (CryptographicException)
        {
            return false; // a certificate whose key cannot be read verifies nothing
        }
    }

    public override long Length => Meta.PayloadBytes;
    public override long Position { get => Meta.PayloadBytes - _left; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash.Dispose();
            _fs.Dispose();
            Signer?.Dispose();
        }
        base.Dispose(disposing);
    }
}
