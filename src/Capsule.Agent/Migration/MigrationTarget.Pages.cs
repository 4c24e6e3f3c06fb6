using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using Capsule.Agent.Checkpoint;
using Capsule.Agent.Faults;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Agent.Migration;

/// <summary>
/// The target's half of a stop-and-copy move's memory: a page server here writes the pages the source's dump
/// sends, as it sends them, into the folder the restore reads (<see cref="Criu.StartPageServer"/>). The bytes are
/// charged to the image's budget and hashed on their way; the image that follows names their count and SHA-256,
/// and nothing is restored unless both match and the page server ended well.
/// </summary>
internal sealed partial class MigrationTarget
{
    readonly ConcurrentDictionary<string, PageStream> _pageStreams = new();

    /// <summary>One capsule's memory on its way in: where it goes, what it may take, how it ended.</summary>
    sealed class PageStream(string work, ImageBudget budget, Process server) : IDisposable
    {
        public string Work => work;
        public ImageBudget Budget => budget;
        public Process Server => server;
        public TaskCompletionSource<PagesWritten> Written { get; } =
            new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Ends the page server, if it still runs (and has not been disposed of).</summary>
        public void Stop()
        {
            try
            {
                if (!server.HasExited) server.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // Disposed of: the image that took it has ended it.
            }
        }

        public void Dispose()
        {
            Written.TrySetResult(new PagesWritten(0, "", "the move was given up"));
            Stop();
            server.Dispose();
        }
    }

    internal readonly record struct PagesWritten(long Bytes, string Sha256, string? Error);

    /// <summary>One page stream: starts the page server, relays both ways, and ends when the server has.</summary>
    public async Task StreamPagesAsync(IAsyncStreamReader<PageBytes> requests, IServerStreamWriter<PageBytes> responses,
        Func<string, Task> authorize, CancellationToken ct)
    {
        if (!await requests.MoveNext(ct)) throw new ArgumentException("empty page stream");
        var name = requests.Current.Name;
        if (Names.CapsuleNameError(name) is { } bad) throw new ArgumentException(bad);
        await authorize(name);
        if (runtime.Find(name) is not null)
            throw new InvalidOperationException($"capsule '{name}' already runs on {O.Host}");
        DropPageStream(name); // an earlier move's, never taken
        var work = IncomingFolder(name);
        if (Directory.Exists(work)) Directory.Delete(work, recursive: true);
        var images = Path.Combine(work, "images");
        PrivateFiles.CreateFolder(work);
        PrivateFiles.CreateFolder(images);
        using var socket = new PageSocket(bulk: true);
        var run = new PageStream(work, ImageBudget.For(O.StateDir, O.MaxImageBytes),
            criu.StartPageServer(images, socket));
        _pageStreams[name] = run;
        try
        {
            await responses.WriteAsync(new PageBytes(), ct); // ready: the dump may start
            var answers = PageRelay.SocketToStreamAsync(socket.Agent, m => responses.WriteAsync(m, ct), ct);
            var (bytes, sha) = await ToPageServerAsync(requests, socket, run.Budget, ct);
            await run.Server.WaitForExitAsync(ct);
            await answers;
            run.Written.TrySetResult(run.Server.ExitCode == 0
                ? new PagesWritten(bytes, sha, null)
                : new PagesWritten(bytes, sha, $"criu page-server ended with status {run.Server.ExitCode}: " +
                    Criu.LogTail(images, "page-server.log")));
        }
        catch (Exception e)
        {
            run.Stop();
            run.Written.TrySetResult(new PagesWritten(0, "", $"the page stream broke: {MigrationSource.Describe(e)}"));
            throw;
        }
    }

    /// <summary>The source's pages into the page server, charged and hashed, until the source sent them all.</summary>
    async Task<(long Bytes, string Sha256)> ToPageServerAsync(IAsyncStreamReader<PageBytes> requests,
        PageSocket socket, ImageBudget budget, CancellationToken ct)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long bytes = 0;
        await PageRelay.StreamToSocketAsync(requests, socket.Agent, () => Task.CompletedTask, ct, async m =>
        {
            budget.Charge(m.Data.Length, "its memory pages");
            sha.AppendData(m.Data.Span);
            if (bytes == 0) await faults.HitAsync(FaultPoints.TargetPages);
            bytes += m.Data.Length;
        });
        // The source is done: so is the page server, once it has read what is left.
        Shutdown(socket.Agent);
        return (bytes, Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    /// <summary>The memory that went ahead of this image, taken for its restore.</summary>
    PageStream? TakePageStream(ImageChunk head)
    {
        if (head.PagesSha256.Length == 0) return null;
        return _pageStreams.TryRemove(head.Name, out var run)
            ? run
            : throw new InvalidOperationException($"the memory of '{head.Name}' did not come ahead of its image");
    }

    /// <summary>Before the restore: the page server has written every page the source sent, and only those.</summary>
    static async Task CheckPagesAsync(PageStream run, ImageChunk head, CancellationToken ct)
    {
        PagesWritten w;
        try
        {
            w = await run.Written.Task.WaitAsync(TimeSpan.FromSeconds(30), ct);
        }
        catch (TimeoutException)
        {
            throw new InvalidDataException("its memory pages were not all written within 30 s of its image");
        }
        if (w.Error is not null) throw new InvalidDataException($"its memory did not arrive whole: {w.Error}");
        if (w.Bytes != head.PagesBytes || w.Sha256 != head.PagesSha256)
            throw new InvalidDataException($"its memory arrived damaged: {w.Bytes} bytes with SHA-256 {w.Sha256}, " +
                $"where {head.PagesBytes} bytes with SHA-256 {head.PagesSha256} were sent");
    }

    /// <summary>A page stream no image took (the move failed): its server and what it wrote go.</summary>
    void DropPageStream(string name)
    {
        if (!_pageStreams.TryRemove(name, out var run)) return;
        run.Dispose();
        if (Directory.Exists(run.Work)) Directory.Delete(run.Work, recursive: true);
    }

    string IncomingFolder(string name) => Path.Combine(O.StateDir, "migrations", name + ".in");
}
