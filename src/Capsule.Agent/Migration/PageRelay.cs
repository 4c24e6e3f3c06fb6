using System.Net.Sockets;
using Capsule.Protos;
using Google.Protobuf;
using Grpc.Core;

namespace Capsule.Agent.Migration;

/// <summary>
/// Carries CRIU's page traffic between a local CRIU process's socket and the other agent's gRPC stream,
/// both ways: pages from the source's dump, and answers from the target's page server (stop-and-copy) or
/// requests from its lazy-pages daemon (post-copy). Bytes are passed on as they come (a request waits for
/// nothing), and counted.
/// </summary>
internal static class PageRelay
{
    /// <summary>
    /// Most bytes in one message: post-copy's, so that an answer to a fault is not held for a fuller one.
    /// </summary>
    public const int ChunkBytes = 256 * 1024;

    /// <summary>Socket to stream, until CRIU closes its end.</summary>
    public static async Task SocketToStreamAsync(Socket socket, Func<PageBytes, Task> write, CancellationToken ct,
        int chunkBytes = ChunkBytes)
    {
        var buffer = new byte[chunkBytes];
        while (true)
        {
            int n;
            try
            {
                n = await socket.ReceiveAsync(buffer, SocketFlags.None, ct);
            }
            catch (SocketException)
            {
                return; // CRIU's end went away: that is the end of its traffic, as EOF is
            }
            if (n == 0) return;
            await write(new PageBytes { Data = ByteString.CopyFrom(buffer, 0, n) });
        }
    }

    /// <summary>
    /// Stream to socket, until the other agent completes its side or sends <see cref="PostCopyEnd"/>,
    /// which is returned (null when none came). <paramref name="onRestoring"/> runs when the target says
    /// its restore begins; <paramref name="onData"/> sees each message before its bytes go on.
    /// </summary>
    public static async Task<PostCopyEnd?> StreamToSocketAsync(IAsyncStreamReader<PageBytes> stream, Socket socket,
        Func<Task> onRestoring, CancellationToken ct, Func<PageBytes, Task>? onData = null)
    {
        while (await stream.MoveNext(ct))
        {
            var m = stream.Current;
            if (m.End is not null) return m.End;
            if (m.Restoring) await onRestoring();
            if (onData is not null) await onData(m);
            var data = m.Data.Memory;
            while (!data.IsEmpty)
            {
                var n = await socket.SendAsync(data, SocketFlags.None, ct);
                data = data[n..];
            }
        }
        return null;
    }
}
