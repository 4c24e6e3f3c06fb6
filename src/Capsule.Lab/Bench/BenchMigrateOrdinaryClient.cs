using System.Diagnostics;

namespace Capsule.Lab;

public static partial class Bench
{
    internal static partial class MigrateBench
    {
        /// <summary>
        /// A client run on an ordinary host: a plain process in that host's namespace (`ip netns exec`,
        /// which execs the command, so the process is the client itself), its stdout collected line by line.
        /// </summary>
        sealed class OrdinaryClient : IDisposable
        {
            readonly Process _p;
            readonly List<string> _out = [];
            readonly List<string> _err = [];

            OrdinaryClient(Process p) => _p = p;

            public static OrdinaryClient Start(string netns, string[] cmd)
            {
                var psi = new ProcessStartInfo("ip")
                {
                    RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false
                };
                foreach (var a in (string[])["netns", "exec", netns, .. cmd]) psi.ArgumentList.Add(a);
                var p = new Process { StartInfo = psi };
                var c = new OrdinaryClient(p);
                p.OutputDataReceived += (_, e) => { if (e.Data is { } l) lock (c._out) c._out.Add(l); };
                p.ErrorDataReceived += (_, e) => { if (e.Data is { } l) lock (c._err) c._err.Add(l); };
                if (!p.Start()) throw new InvalidOperationException("could not start ip netns exec");
                p.BeginOutputReadLine();
                p.BeginErrorReadLine();
                return c;
            }

            string[] Lines() { lock (_out) return [.. _out]; }

            string StderrTail()
            {
                lock (_err) return string.Join(' ', _err.TakeLast(3)).Trim();
            }

            /// <summary>
            /// Waits until a stdout line starts with <paramref name="prefix"/>; stops early at an ERROR
            /// line or when the process has ended without it. Line is null (and no Error) on timeout.
            /// </summary>
            public async Task<(string? Line, string? Error)> WaitFor(string prefix, TimeSpan limit)
            {
                var sw = Stopwatch.StartNew();
                while (true)
                {
                    var exited = _p.HasExited;
                    if (exited) _p.WaitForExit(); // the rest of its output, read to the end
                    var lines = Lines();
                    if (lines.FirstOrDefault(l => l.StartsWith("ERROR", StringComparison.Ordinal)) is { } err)
                        return (null, err.Trim());
                    if (lines.FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal)) is { } hit)
                        return (hit.Trim(), null);
                    if (exited)
                    {
                        var tail = StderrTail();
                        return (null,
                            $"exited ({_p.ExitCode}) without {prefix}{(tail.Length > 0 ? $" (stderr: {tail})" : "")}");
                    }
                    if (sw.Elapsed > limit)
                        return (null, prefix == "PROGRESS" ? $"no {prefix} within {limit.TotalSeconds:F0} s" : null);
                    await Task.Delay(50);
                }
            }

            public void Dispose()
            {
                try
                {
                    if (!_p.HasExited)
                    {
                        _p.Kill(entireProcessTree: true);
                        _p.WaitForExit(5000);
                    }
                }
                catch (InvalidOperationException) { } // ended in between
                _p.Dispose();
            }
        }
    }
}
