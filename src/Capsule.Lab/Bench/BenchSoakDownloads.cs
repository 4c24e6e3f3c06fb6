using System.Diagnostics;

namespace Capsule.Lab;

public static partial class Bench
{
    static partial class SoakBench
    {
        /// <summary>
        /// An ordinary host downloading one file again and again (curl, paced, through the gateway) until
        /// told to stop; each download's sha256 is checked. Back-to-back downloads of a small file, rather
        /// than one large one, keep a download running however long the migrations take.
        /// </summary>
        sealed class DownloadLoop : IAsyncDisposable
        {
            /// <summary>A download stuck at a zero window for ever would otherwise never end.</summary>
            const int MaxSecondsEach = 120;

            readonly string _netns;
            readonly string _url;
            readonly string _rate;
            readonly string _sha256;
            readonly CancellationTokenSource _stop = new();   // no new download after this
            readonly CancellationTokenSource _kill;           // the current one ends too
            readonly List<string> _failures = [];
            Task<DownloadOutcome> _run = Task.FromResult(new DownloadOutcome(0, 0, 0, []));

            DownloadLoop(string netns, string url, string rate, string sha256, CancellationToken ct)
            {
                _netns = netns;
                _url = url;
                _rate = rate;
                _sha256 = sha256;
                _kill = CancellationTokenSource.CreateLinkedTokenSource(ct);
            }

            public static DownloadLoop Start(string netns, string url, string rate, string sha256, CancellationToken ct)
            {
                var loop = new DownloadLoop(netns, url, rate, sha256, ct);
                loop._run = Task.Run(loop.RunAsync, CancellationToken.None);
                return loop;
            }

            /// <summary>Lets the current download finish (it is checked too) and returns the counts.</summary>
            public async Task<DownloadOutcome> StopAsync()
            {
                _stop.Cancel();
                _kill.CancelAfter(TimeSpan.FromSeconds(MaxSecondsEach + 10));
                return await _run;
            }

            async Task<DownloadOutcome> RunAsync()
            {
                var count = 0;
                var ok = 0;
                long bytes = 0;
                while (!_stop.IsCancellationRequested && !_kill.IsCancellationRequested)
                {
                    var started = DateTime.UtcNow;
                    var (hash, error) = await OneAsync();
                    if (_kill.IsCancellationRequested) break; // ended from outside: not a result
                    count++;
                    if (error is null && hash == _sha256)
                    {
                        ok++;
                        bytes += BlobMb << 20;
                    }
                    // Its times (UTC, as the migrations' are) place it among the moves.
                    else _failures.Add($"{started:HH:mm:ss.fff}-{DateTime.UtcNow:HH:mm:ss.fff} UTC: "
                        + (error ?? $"sha256 {hash}"));
                }
                return new DownloadOutcome(count, ok, bytes, [.. _failures]);
            }

            /// <summary>One download in the ordinary host's namespace; curl's failure is its own (pipefail).</summary>
            async Task<(string? Hash, string? Error)> OneAsync()
            {
                var curl = $"curl -sS --fail -m {MaxSecondsEach} --limit-rate {_rate} '{_url}'";
                var script = $"set -o pipefail; {curl} | sha256sum";
                var psi = new ProcessStartInfo("ip")
                {
                    RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
                };
                foreach (var a in (string[])["netns", "exec", _netns, "bash", "-c", script]) psi.ArgumentList.Add(a);
                using var p = Process.Start(psi)
                    ?? throw new InvalidOperationException("could not start ip netns exec");
                var stdout = p.StandardOutput.ReadToEndAsync();
                var stderr = p.StandardError.ReadToEndAsync();
                try
                {
                    await p.WaitForExitAsync(_kill.Token);
                }
                catch (OperationCanceledException)
                {
                    p.Kill(entireProcessTree: true);
                    return (null, "ended before it finished");
                }
                var hash = (await stdout).Split(' ')[0].Trim();
                if (p.ExitCode == 0) return (hash, null);
                return (null, $"curl failed (exit {p.ExitCode}): {(await stderr).Trim()}");
            }

            public async ValueTask DisposeAsync()
            {
                _stop.Cancel();
                _kill.Cancel();
                try
                {
                    await _run;
                }
                catch (Exception) when (_kill.IsCancellationRequested) { }
                _kill.Dispose();
                _stop.Dispose();
            }
        }
    }
}
