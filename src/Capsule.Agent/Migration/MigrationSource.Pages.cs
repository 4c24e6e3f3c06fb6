using System.Net.Sockets;
using System.Security.Cryptography;
using Capsule.Agent.Checkpoint;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Agent.Migration;

/// <summary>
/// The source's half of a stop-and-copy move's memory (docs/migration.md, "Memory goes as CRIU writes it"):
/// the dump writes its pages to a socket, not to disk, and they cross to the target's page server as CRIU
/// writes them (<see cref="Criu.StartPageServer"/>). A copy is kept here, as it went, for a rollback
/// that finds the tree gone (<see cref="Criu.ReplayPagesAsync"/>); their count and SHA-256 go in the image's
/// header, and the target restores nothing unless its own match.
/// </summary>
internal sealed partial class MigrationSource
{
    /// <summary>Before the sync: the target's page server runs, and the relay to it is open.</summary>
    async Task OpenPageStreamAsync(Move m, CancellationToken ct)
    {
        Directory.CreateDirectory(m.Images);
        m.Pages = new PageSocket(bulk: true);
        var call = m.TargetAgent.StreamPages(cancellationToken: m.PagesCancel.Token);
        m.PagesCall = call;
        await call.RequestStream.WriteAsync(new PageBytes { Name = m.Capsule.Name }, ct);
        if (!await call.ResponseStream.MoveNext(ct))
            throw new InvalidOperationException($"{m.Target.Name} closed the page stream at once");
        var socket = m.Pages.Agent;
        var token = m.PagesCancel.Token;
        m.PagesSent = Task.Run(() => SendPagesAsync(m, call, socket, token), token);
        // The page server's answers, to the dump that waits for them.
        _ = Task.Run(async () =>
        {
            try
            {
                await PageRelay.StreamToSocketAsync(call.ResponseStream, socket, () => Task.CompletedTask, token);
            }
            catch (Exception e) when (e is RpcException or OperationCanceledException or IOException
                or SocketException or ObjectDisposedException)
            {
                socket.Dispose();
            }
        }, token);
    }

    /// <summary>
    /// CRIU's pages to the target, kept and hashed on the way, until the dump closes its end. Any failure closes
    /// the socket: the dump fails then, and CRIU resumes the tree, rather than wait for an answer that never comes.
    /// </summary>
    static async Task<SentPages> SendPagesAsync(Move m, AsyncDuplexStreamingCall<PageBytes, PageBytes> call,
        Socket socket, CancellationToken ct)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long bytes = 0;
        try
        {
            await using var kept = PrivateFiles.CreateNew(Path.Combine(m.Images, Criu.PageStreamFile));
            await PageRelay.SocketToStreamAsync(socket, async b =>
            {
                sha.AppendData(b.Data.Span);
                await m.Meter.SendingAsync(b.Data.Length, ct);
                var sending = call.RequestStream.WriteAsync(b, ct);
                await kept.WriteAsync(b.Data.Memory, ct);
                await sending;
                bytes += b.Data.Length;
            }, ct, ChunkStream.ChunkSize);
            await call.RequestStream.CompleteAsync();
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new SentPages(bytes, Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    /// <summary>The dump ended well: every page it wrote is on its way (it closed the socket before its end).</summary>
    async Task<FrozenTree> DumpStreamingAsync(Move m, CancellationToken ct)
    {
        FrozenTree frozen;
        try
        {
            frozen = await criu.DumpAsync(m.Capsule.Pid, m.Capsule.Root is not null, m.Images, m.Pages, lazy: false,
                ct);
        }
        catch (CheckpointException) when (m.PagesSent is { IsFaulted: true } sent)
        {
            throw new InvalidOperationException($"the stream of its memory to {m.Target.Name} broke: " +
                Describe(sent.Exception!.InnerException!));
        }
        try
        {
            m.Sent = await m.PagesSent!;
        }
        catch
        {
            m.Frozen = frozen; // the rollback thaws it
            throw;
        }
        return frozen;
    }

    /// <summary>
    /// The relay and CRIU's socket go: a dump still serving pages (post-copy) or writing them sees the end of its
    /// client, and so does the target's page server.
    /// </summary>
    static void ClosePages(Move m)
    {
        m.PagesCancel.Cancel();
        m.PagesCall?.Dispose();
        m.Pages?.Dispose();
    }

    internal readonly record struct SentPages(long Bytes, string Sha256);
}
