using Capsule.Agent.Checkpoint;
using Capsule.Agent.Faults;
using Capsule.Protos;
using Capsule.Rpc;
using Google.Protobuf;

namespace Capsule.Agent.Migration;

/// <summary>The transfer step of a move: the image, as one checksummed stream to the target's Receive.</summary>
internal sealed partial class MigrationSource
{
    /// <summary>
    /// Streams the image (CRIU's files but the memory that went ahead, and the capsule's own folder but what was
    /// staged, as tar) to the target, then its checksum.
    /// </summary>
    async Task<ReceiveReply> SendAsync(Move m, CancellationToken ct)
    {
        var c = m.Capsule;
        using var call = m.TargetAgent.Receive(cancellationToken: ct);
        var first = new ImageChunk
        {
            Name = c.Name, Locator = c.Locator.ToString(), UdpDrop = c.UdpDrop, PostCopy = m.PostCopy,
            RootFs = c.Root?.ToProto(), Limits = c.Limits?.ToProto(),
        };
        first.Command.AddRange(c.Command);
        // The tree is frozen: its files stand still, and those staged and unchanged stay out of the image.
        var staged = m.Staged.Unchanged(c.Dir);
        first.Staged.AddRange(staged);
        first.PagesBytes = m.Sent.Bytes;
        first.PagesSha256 = m.Sent.Sha256 ?? "";
        await call.RequestStream.WriteAsync(first, ct);
        var chunks = 0;
        await using var stream = new ChunkStream(async (data, token) =>
        {
            var bytes = ByteString.CopyFrom(data.Span);
            await m.Meter.SendingAsync(data.Length, token);
            if (chunks++ == 0 && faults.Fires(FaultPoints.SourceTransfer, FaultAction.Corrupt))
                bytes = ByteString.CopyFrom([(byte)(data.Span[0] ^ 0xFF), .. data.Span[1..]]);
            await call.RequestStream.WriteAsync(new ImageChunk { Data = bytes }, token);
            if (chunks == 1) await faults.HitAsync(FaultPoints.SourceTransfer);
        });
        await ImageArchive.WriteAsync(stream, m.Images, c.Dir, ct, staged);
        var sha = await stream.FinishAsync(ct);
        m.Result.ImageBytes = stream.Length + m.Sent.Bytes;
        await call.RequestStream.WriteAsync(new ImageChunk { Sha256 = sha }, ct);
        await call.RequestStream.CompleteAsync();
        return await call;
    }
}
