using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Protos;
using Grpc.Core;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.Migration;

/// <summary>
/// The target's half of a post-copy move: the capsule is restored before its memory arrives, and
/// CRIU's lazy-pages daemon here fills it in, the pages the capsule touches first and then the rest,
/// from the source's dump, over the page relay the source opened (<see cref="PagesAsync"/>). The
/// tail ends when the daemon has every page. If it ends otherwise, the capsule cannot go on: its
/// missing pages would read as zeros. It is killed here and recorded as stopped, and the source is
/// told; its own copy is older than what the peers saw and is not resumed (docs/migration.md).
/// </summary>
internal sealed partial class MigrationTarget
{
    readonly ConcurrentDictionary<string, PostCopyTail> _tails = new();

    /// <summary>One capsule's relay: CRIU's socket here and how its tail ended.</summary>
    sealed class PostCopyTail
    {
        readonly SemaphoreSlim _writing = new(1, 1);

        public PageSocket Socket { get; } = new();
        public TaskCompletionSource<PostCopyEnd> End { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public bool Started { get; set; }
        public IServerStreamWriter<PageBytes>? Responses { get; set; }

        /// <summary>One message to the source; the relay and the restore both send.</summary>
        public async Task WriteAsync(PageBytes m, CancellationToken ct)
        {
            await _writing.WaitAsync(ct);
            try
            {
                await Responses!.WriteAsync(m, ct);
            }
            finally
            {
                _writing.Release();
            }
        }
    }

    /// <summary>
    /// Serves one page relay: registers it for the restore that follows, relays both ways, and sends
    /// the tail's end last.
    /// </summary>
    public async Task PagesAsync(IAsyncStreamReader<PageBytes> requests, IServerStreamWriter<PageBytes> responses,
        Func<string, Task> authorize, CancellationToken ct)
    {
        if (!await requests.MoveNext(ct)) throw new ArgumentException("empty page stream");
        var name = requests.Current.Name;
        if (Names.CapsuleNameError(name) is { } bad) throw new ArgumentException(bad);
        await authorize(name);
        var tail = new PostCopyTail { Responses = responses };
        if (!_tails.TryAdd(name, tail))
        {
            tail.Socket.Dispose();
            throw new InvalidOperationException($"capsule '{name}' already has a page relay to {O.Host}");
        }
        try
        {
            await tail.WriteAsync(new PageBytes(), ct);
            var socket = tail.Socket.Agent;
            var toDaemon = Task.Run(async () =>
            {
                try
                {
                    await PageRelay.StreamToSocketAsync(requests, socket, () => Task.CompletedTask, ct);
                }
                finally
                {
                    // The source is done (or gone): so is the daemon's page server, and a daemon not
                    // yet started will not start.
                    Shutdown(socket);
                    tail.Socket.CloseChild();
                }
            }, ct);
            await PageRelay.SocketToStreamAsync(socket, m => tail.WriteAsync(m, ct), ct);
            if (!tail.Started)
                tail.End.TrySetResult(new PostCopyEnd { Error = $"no restore on {O.Host} took the pages" });
            var end = await tail.End.Task.WaitAsync(ct);
            await tail.WriteAsync(new PageBytes { End = end }, ct);
            _ = toDaemon.ContinueWith(t => t.Exception, TaskScheduler.Default);
        }
        finally
        {
            _tails.TryRemove(name, out _);
            tail.End.TrySetResult(new PostCopyEnd { Error = "the page relay ended" });
            tail.Socket.Dispose();
        }
    }

    static void Shutdown(Socket socket)
    {
        try
        {
            socket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already closed: nothing more to tell CRIU.
        }
    }

    /// <summary>Before a lazy restore: the daemon that will fill the memory, on the relay the source opened.</summary>
    async Task<(Process Daemon, PostCopyTail Tail)> StartLazyPagesAsync(string name, string images,
        CancellationToken ct)
    {
        if (!_tails.TryGetValue(name, out var tail))
            throw new InvalidOperationException($"post-copy move of '{name}': the source opened no page relay");
        var daemon = await criu.StartLazyPagesAsync(images, tail.Socket, ct);
        tail.Started = true;
        try
        {
            // The restore faults on pages (the stacks it writes): the source must serve from now on.
            await tail.WriteAsync(new PageBytes { Restoring = true }, ct);
        }
        catch
        {
            daemon.Kill(entireProcessTree: true);
            daemon.Dispose();
            throw;
        }
        return (daemon, tail);
    }

    /// <summary>
    /// After a lazy restore: waits for the daemon's end, which is the tail's; on any end but "every
    /// page arrived" the capsule is killed (its wrapper has done so already, should this agent be gone)
    /// and recorded as stopped, with why.
    /// </summary>
    void WatchTail(string name, int pid, Process daemon, PostCopyTail tail, string images, string work)
    {
        var clock = Stopwatch.StartNew();
        _ = Task.Run(async () =>
        {
            PostCopyEnd end;
            try
            {
                await faults.HitAsync(Faults.FaultPoints.TargetPostCopyTail);
                await daemon.WaitForExitAsync();
                end = daemon.ExitCode == 0
                    ? new PostCopyEnd { Ok = true, TailMs = clock.ElapsedMilliseconds }
                    : new PostCopyEnd
                    {
                        TailMs = clock.ElapsedMilliseconds,
                        Error = $"criu lazy-pages ended with status {daemon.ExitCode} before every page arrived: " +
                            Criu.LogTail(images, "lazy-pages.log"),
                    };
                if (!end.Ok)
                {
                    LogTailFailed(log, name, end.Error);
                    await CapsuleProcess.KillAsync(pid);
                    await runtime.MarkStoppedAsync(name, $"lost in its post-copy move: {end.Error}");
                }
                else
                {
                    LogTailDone(log, name, end.TailMs);
                }
            }
            catch (Exception e)
            {
                end = new PostCopyEnd { Error = $"watching the post-copy tail failed: {e.Message}" };
            }
            finally
            {
                daemon.Dispose();
                runtime.EndMove(name);
                if (Directory.Exists(work) && Environment.GetEnvironmentVariable("CAPSULE_KEEP_IMAGES") is null)
                    Directory.Delete(work, recursive: true);
            }
            tail.End.TrySetResult(end);
        });
    }

    [LoggerMessage(EventId = 323, Level = LogLevel.Information,
        Message = "{Name}: every page arrived, {Ms} ms after it resumed here (post-copy)")]
    static partial void LogTailDone(ILogger logger, string name, long ms);

    [LoggerMessage(EventId = 324, Level = LogLevel.Error,
        Message = "{Name} is lost: its post-copy tail failed ({Error}); it was killed here and marked stopped")]
    static partial void LogTailFailed(ILogger logger, string name, string error);
}
