using System.Diagnostics;
using Capsule.Linux;

namespace Capsule.Checkpoint;

/// <summary>
/// A capsule's tree, dumped and held frozen by a CRIU dump that waits for a verdict. Commit ends
/// it (its sockets closed in repair mode: no FIN, no reset reaches a peer); roll back resumes it
/// with its connections. The verdict goes through a FIFO, so an agent that restarts after a
/// crash can still give it to the dump it left waiting (<see cref="Reattach"/>).
/// </summary>
internal sealed class FrozenTree(int pid, string images, string verdict, Process? dump)
{
    public int Pid => pid;
    public string Images => images;

    /// <summary>The dump left waiting by an earlier run of this agent, if it still waits.</summary>
    public static FrozenTree? Reattach(int pid, string images)
    {
        var verdict = Path.Combine(images, "verdict");
        if (!File.Exists(verdict + ".ready") || !CapsuleProcess.IsAlive(pid)) return null;
        return new FrozenTree(pid, images, verdict, null);
    }

    /// <summary>The capsule runs elsewhere: CRIU ends the tree here.</summary>
    public Task CommitAsync() => DecideAsync("commit");

    /// <summary>The move failed: CRIU resumes the tree here, its sockets out of repair mode.</summary>
    public async Task RollBackAsync()
    {
        await DecideAsync("rollback");
        if (CapsuleProcess.IsAlive(pid) && IsStopped(pid))
            throw new CheckpointException($"the tree of pid {pid} did not resume: {Criu.LogTail(images, "dump.log")}");
    }

    async Task DecideAsync(string word)
    {
        // Opened read-write, so opening never blocks even if the dump has given up waiting.
        await using (var fifo = new FileStream(verdict, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1))
        {
            await fifo.WriteAsync(System.Text.Encoding.ASCII.GetBytes(word + "\n"));
        }
        if (dump is not null)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await dump.WaitForExitAsync(cts.Token);
            dump.Dispose();
            return;
        }
        // A dump started by an earlier run of this agent is not our child: wait for its effect.
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(30) && CapsuleProcess.IsAlive(pid) && IsStopped(pid))
            await Task.Delay(5);
    }

    static bool IsStopped(int pid)
    {
        try
        {
            var state = File.ReadAllText($"/proc/{pid}/stat").Split(") ")[1][0];
            return state is 'T' or 't';
        }
        catch (IOException)
        {
            return false;
        }
    }
}
