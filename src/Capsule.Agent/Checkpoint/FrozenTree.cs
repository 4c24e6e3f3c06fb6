using System.Diagnostics;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

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

    /// <summary>
    /// The dump left waiting by an earlier run of this agent, if it still waits. A dump still under
    /// way (the agent died while CRIU dumped) is waited for, up to <paramref name="patience"/>, until
    /// it reaches its verdict or ends: deciding before then would race CRIU for the tree.
    /// </summary>
    public static async Task<FrozenTree?> ReattachAsync(int pid, string images, TimeSpan patience,
        CancellationToken ct)
    {
        var verdict = Path.Combine(images, "verdict");
        var sw = Stopwatch.StartNew();
        while (!File.Exists(verdict + ".ready") && DumpRuns(images) && sw.Elapsed < patience)
            await Task.Delay(20, ct);
        if (!File.Exists(verdict + ".ready") || !CapsuleProcess.IsAlive(pid)) return null;
        return new FrozenTree(pid, images, verdict, null);
    }

    /// <summary>Where <see cref="Criu.DumpAsync"/> notes its CRIU's pid.</summary>
    internal static string DumpPidFile(string images) => Path.Combine(images, "dump.pid");

    /// <summary>
    /// Whether the CRIU dump into <paramref name="images"/> still runs (its pid, still a dump of them).
    /// </summary>
    static bool DumpRuns(string images)
    {
        try
        {
            var pid = int.Parse(File.ReadAllText(DumpPidFile(images)).Trim());
            var cmd = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            return cmd.Contains(" dump ") && cmd.Contains(images);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>The capsule runs elsewhere: CRIU ends the tree here.</summary>
    public Task CommitAsync() => DecideAsync("commit");

    /// <summary>
    /// Post-copy: the verdict "commit" given without waiting for the dump's end, which comes only once
    /// the target has every page (CRIU's lazy dump serves them after its post-dump action, then ends the
    /// tree). <see cref="CommitAsync"/> later waits for that end.
    /// </summary>
    public Task GiveCommitAsync() => GiveAsync("commit");

    /// <summary>The move failed: CRIU resumes the tree here, its sockets out of repair mode.</summary>
    public async Task RollBackAsync()
    {
        await DecideAsync("rollback");
        if (CapsuleProcess.IsAlive(pid) && IsStopped(pid))
            throw new CheckpointException($"the tree of pid {pid} did not resume: {Criu.LogTail(images, "dump.log")}");
    }

    string? _given;

    async Task GiveAsync(string word)
    {
        // One verdict per dump: the hook reads one line.
        if (Interlocked.CompareExchange(ref _given, word, null) is not null) return;
        // Opened read-write, so opening never blocks even if the dump has given up waiting.
        await using var fifo = new FileStream(verdict, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite, 1);
        await fifo.WriteAsync(System.Text.Encoding.ASCII.GetBytes(word + "\n"));
    }

    async Task DecideAsync(string word)
    {
        await GiveAsync(word);
        if (dump is not null)
        {
            // A post-copy move gave its verdict at the restore's start and waits here once its tail has
            // ended: its dump has no more pages to serve by then.
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
