using System.Diagnostics;
using System.Runtime.InteropServices;
using Capsule.Agent.Linux;

namespace Capsule.Lab;

/// <summary>
/// Keeps one daemon running, as systemd does for a unit with Restart=always and RestartSec=1 s: when
/// the daemon exits for any reason but being told to stop, it is started again a second later, in
/// the same namespaces (the supervisor runs where the daemon runs). A crash loop is cut short like
/// systemd's start limit: more than <see cref="Burst"/> restarts within <see cref="Window"/> and the
/// supervisor gives up, saying so. SIGTERM (or SIGINT) is passed on to the daemon, and the supervisor
/// exits once the daemon is gone, so stopping the supervisor stops the daemon.
/// </summary>
public sealed class Supervisor(string name, IReadOnlyList<string> command, string? childPidFile)
{
    static readonly TimeSpan RestartDelay = TimeSpan.FromSeconds(1);
    static readonly TimeSpan Window = TimeSpan.FromSeconds(30);
    const int Burst = 10;
    const int SIGTERM = 15;

    readonly CancellationTokenSource _stop = new();
    readonly Lock _gate = new();
    Process? _child;

    public async Task<int> RunAsync()
    {
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        var restarts = new Queue<DateTime>();
        while (true)
        {
            Process child;
            lock (_gate)
            {
                if (_stop.IsCancellationRequested) return 0;
                child = Start();
                _child = child;
            }
            // Not cancellable: even when told to stop, the supervisor waits for the daemon to go.
            await child.WaitForExitAsync();
            var how = Describe(child.ExitCode);
            ForgetPidFile(child.Id);
            child.Dispose();
            if (_stop.IsCancellationRequested)
            {
                Say($"{name} stopped ({how})");
                return 0;
            }
            var now = DateTime.UtcNow;
            while (restarts.Count > 0 && now - restarts.Peek() > Window) restarts.Dequeue();
            if (restarts.Count >= Burst)
            {
                Say($"{name} exited ({how}); it was restarted {Burst} times within {Window.TotalSeconds:0} s, " +
                    "giving up (look above for why it keeps failing)");
                return 1;
            }
            restarts.Enqueue(now);
            Say($"{name} exited ({how}); restarting in {RestartDelay.TotalSeconds:0} s");
            try { await Task.Delay(RestartDelay, _stop.Token); }
            catch (OperationCanceledException)
            {
                Say($"told to stop; not restarting {name}");
                return 0;
            }
        }
    }

    Process Start()
    {
        var psi = new ProcessStartInfo(command[0]) { UseShellExecute = false }; // stdio inherited: the same log
        foreach (var a in command.Skip(1)) psi.ArgumentList.Add(a);
        var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {command[0]}");
        Say($"started {name}, pid {p.Id}");
        return p;
    }

    void Stop(PosixSignalContext ctx)
    {
        ctx.Cancel = true; // the supervisor exits by itself, once the daemon is gone
        lock (_gate)
        {
            if (!_stop.IsCancellationRequested) Say($"told to stop; stopping {name}");
            _stop.Cancel();
            if (_child is { } c)
            {
                try
                {
                    if (!c.HasExited) Native.kill(c.Id, SIGTERM);
                }
                catch (InvalidOperationException) { } // already disposed: it is gone
            }
        }
    }

    /// <summary>
    /// A daemon killed outright leaves its pid file naming a dead process; it goes, so nothing later
    /// signals whatever process reuses that number. The restarted daemon writes its own.
    /// </summary>
    void ForgetPidFile(int pid)
    {
        if (childPidFile is null) return;
        try
        {
            if (File.Exists(childPidFile) && File.ReadAllText(childPidFile).Trim() == pid.ToString())
                File.Delete(childPidFile);
        }
        catch (IOException) { }
    }

    /// <summary>.NET reports a daemon killed by a signal as exit code 128 + the signal's number.</summary>
    static string Describe(int code) => code is > 128 and < 128 + 65 ? $"signal {code - 128}" : $"exit code {code}";

    static void Say(string line) => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} supervisor: {line}");
}
