using Capsule.Agent.Checkpoint;
using Capsule.Protos;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CapsuleState = Capsule.Core.CapsuleState;

namespace Capsule.Agent.Migration;

/// <summary>
/// The source's half of a post-copy move (docs/migration.md, "Memory: stop-and-copy or post-copy"): the
/// dump leaves the memory in the frozen tree and serves it, from the commit (the target's restore
/// begins) on, to the target's lazy-pages daemon over a relay of the two agents
/// (<see cref="PageRelay"/>). The tree here ends only when the
/// target has every page. A tail that fails leaves no copy that could go on: the target's had its
/// newest state but not all its memory, and this one is older than what its peers saw.
/// </summary>
internal sealed partial class MigrationSource
{
    /// <summary>With no page moving for this long, the tail is taken for dead.</summary>
    static readonly TimeSpan TailStall = TimeSpan.FromSeconds(30);

    /// <summary>Opens the relay to the target, once it is ready to take pages, and starts carrying both ways.</summary>
    async Task OpenPagesAsync(Move m, CancellationToken ct)
    {
        var call = m.TargetAgent.Pages(cancellationToken: m.PagesCancel.Token);
        m.PagesCall = call;
        await call.RequestStream.WriteAsync(new PageBytes { Name = m.Capsule.Name }, ct);
        if (!await call.ResponseStream.MoveNext(ct))
            throw new InvalidOperationException($"{m.Target.Name} closed the page relay at once");
        var socket = m.Pages!.Agent;
        var token = m.PagesCancel.Token;
        // Its end shows in TailEnd: the target answers last, once its daemon has ended.
        _ = Task.Run(async () =>
        {
            await PageRelay.SocketToStreamAsync(socket, async b =>
            {
                await faults.HitAsync(Faults.FaultPoints.SourcePostCopyPages);
                await call.RequestStream.WriteAsync(b, token);
                Interlocked.Add(ref m.RelayedBytes, b.Data.Length);
            }, token);
            await call.RequestStream.CompleteAsync();
        }, token);
        m.TailEnd = Task.Run(() => PageRelay.StreamToSocketAsync(call.ResponseStream, socket, async () =>
        {
            // The point of no return of a post-copy move: the dump serves pages, then ends the tree here.
            m.Committed = true;
            await m.Frozen!.GiveCommitAsync();
        }, token), token);
    }

    /// <summary>
    /// After the switch and the flush: waits for the target to have every page. On failure the capsule
    /// is lost (see the type); that is reported, and the directory says so if the target could not.
    /// </summary>
    async Task EndTailAsync(Move m)
    {
        var r = m.Result;
        PostCopyEnd? end;
        await faults.HitAsync(Faults.FaultPoints.SourcePostCopyTail);
        try
        {
            var seen = -1L;
            while (!m.TailEnd!.IsCompleted)
            {
                await Task.WhenAny(m.TailEnd, Task.Delay(TailStall));
                var now = Interlocked.Read(ref m.RelayedBytes);
                if (!m.TailEnd.IsCompleted && now == seen)
                {
                    await m.PagesCancel.CancelAsync();
                    break;
                }
                seen = now;
            }
            end = await m.TailEnd;
        }
        catch (Exception e) when (e is RpcException or OperationCanceledException or IOException)
        {
            end = new PostCopyEnd
            {
                Error = e is OperationCanceledException
                    ? $"no page moved for {TailStall.TotalSeconds:0} s"
                    : $"the page relay to {m.Target.Name} broke: {Describe(e)}",
            };
        }
        end ??= new PostCopyEnd { Error = $"{m.Target.Name} ended the page relay without a word" };
        r.PostCopyBytes = Interlocked.Read(ref m.RelayedBytes);
        r.Times.PostCopyTailMs = end.TailMs;
        if (end.Ok) return;
        m.TailFailure = $"the capsule is lost: its post-copy tail failed ({end.Error}). Its newest state was on " +
            $"{m.Target.Name} without all its memory; the older copy here cannot go on either (its peers saw more)";
        LogTailLost(log, m.Capsule.Name, m.Target.Name, end.Error);
        await RecordLostAsync(m, end.Error);
    }

    /// <summary>The target marks a lost capsule stopped itself; should it be gone, this host does.</summary>
    async Task RecordLostAsync(Move m, string why)
    {
        try
        {
            var rec = (await directory.SnapshotAsync()).Capsules.GetValueOrDefault(m.Capsule.Name);
            if (rec is { State: CapsuleState.Running } && rec.Host == m.Target.Name)
                await directory.UpdateAsync(m.Capsule.Name, m.Target.Name, CapsuleState.Stopped, rec.Revision,
                    $"lost in its post-copy move: {why}", CancellationToken.None);
        }
        catch (Exception e)
        {
            LogTidyFailed(log, m.Capsule.Name, m.Target.Name, e.Message);
        }
    }

    /// <summary>
    /// A failure after the restore on the target began (the commit) but before the switch: the tree
    /// here ends once the relay is gone, and the one there is dropped (the directory does not place it
    /// there), so the capsule is lost, and recorded as stopped here with why.
    /// </summary>
    async Task<MigrateResult> LostAsync(Move m, Exception e)
    {
        var r = m.Result;
        r.Error = $"the capsule is lost: its post-copy move failed after its restore on {m.Target.Name} began " +
            $"({Describe(e)}); the copy here served its memory and ended with it";
        LogTailLost(log, m.Capsule.Name, m.Target.Name, Describe(e));
        ClosePages(m);
        await rollback.AbortTargetAsync(m.TargetAgent, m.Capsule.Name);
        try
        {
            if (m.Holds is not null) Add(r, await m.Holds.ReleaseAsync(Core.Locator.None));
            await m.Frozen!.CommitAsync();
            // The lazy dump ends the tree once it has served every page; cut short, the dump fails, and a failed
            // dump resumes its tree (seen: the old copy of a lost capsule ran on here). No copy may run.
            await Linux.Netns.KillAllAsync(m.Capsule.Netns);
            await runtime.MarkStoppedAsync(m.Capsule.Name, $"lost in its post-copy move: {Describe(e)}");
            journal.Remove(m.Capsule.Name);
        }
        catch (Exception x)
        {
            LogTidyFailed(log, m.Capsule.Name, m.Target.Name, x.Message);
        }
        r.Times.TotalMs = m.Clock.Total;
        return r;
    }

    [LoggerMessage(EventId = 315, Level = LogLevel.Error,
        Message = "{Name} is lost: the post-copy tail of its move to {Target} failed ({Error})")]
    static partial void LogTailLost(ILogger logger, string name, string target, string error);
}
