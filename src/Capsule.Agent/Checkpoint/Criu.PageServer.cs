using System.Diagnostics;
using System.Net.Sockets;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// CRIU's page server, for a stop-and-copy move: the source's dump writes the memory pages to a socket as it
/// goes (`criu dump --page-server --ps-socket N`), and a page server on the target writes them into the
/// restore's folder, so the memory crosses as CRIU writes it and is not copied to the source's disk first.
/// The source keeps the bytes it sent, in order, in <see cref="PageStreamFile"/>: replayed into a page server of
/// its own, they make its images whole again should it have to restore the capsule itself (its tree gone
/// before a rollback). A page server's output depends only on the bytes it reads, so the replay writes the
/// same files the target's did.
/// </summary>
public sealed partial class Criu
{
    /// <summary>In a source's images: the memory pages its dump sent, as they went.</summary>
    public const string PageStreamFile = "pages.stream";

    /// <summary>
    /// Starts a page server that writes the pages read on <paramref name="pages"/> into <paramref name="images"/>.
    /// It ends, with status 0, after the dump's last close; its last pagemap is on disk only then.
    /// </summary>
    internal Process StartPageServer(string images, PageSocket pages)
    {
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        string[] args =
        [
            "-c", """o=$1; shift; exec "$@" </dev/null >>"$o" 2>&1""", "sh", Path.Combine(images, "page-server.out"),
            binary, "page-server", "--ps-socket", pages.Child.ToString(),
            "-D", images, "-o", "page-server.log", "-v2",
        ];
        foreach (var a in args) psi.ArgumentList.Add(a);
        var server = Spawn.Start(psi, pages.Child);
        pages.CloseChild();
        return server;
    }

    /// <summary>The copy of the memory a source sent (<see cref="PageStreamFile"/>), back as CRIU's images.</summary>
    internal async Task ReplayPagesAsync(string images, CancellationToken ct)
    {
        var recording = Path.Combine(images, PageStreamFile);
        using var pages = new PageSocket(bulk: true);
        using var server = StartPageServer(images, pages);
        var socket = pages.Agent;
        // Its answers (a byte per image opened, four per close) are read and dropped: the dump that waited for
        // them is over.
        var answers = Task.Run(async () =>
        {
            var buffer = new byte[64];
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, ct) > 0)
            {
            }
        }, ct);
        await using (var from = File.OpenRead(recording))
        await using (var to = new NetworkStream(socket, ownsSocket: false))
            await from.CopyToAsync(to, ct);
        socket.Shutdown(SocketShutdown.Send);
        await server.WaitForExitAsync(ct);
        await answers;
        if (server.ExitCode != 0)
            throw new CheckpointException($"replaying the memory kept in {recording} failed: " +
                LogTail(images, "page-server.log"));
    }
}
