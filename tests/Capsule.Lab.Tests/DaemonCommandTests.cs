using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// `capsule agent|directory --config F [--check]` as an operator and systemd run them: the check's verdict and
/// output, and a daemon's log, readiness notice and exit on SIGTERM. No lab: the directory runs on a socket in
/// a temporary folder.
/// </summary>
public sealed class DaemonCommandTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-daemon-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    static Process Start(string file, IEnumerable<string> args, Dictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    static async Task<Cli.Result> Run(IEnumerable<string> args, Dictionary<string, string>? env = null)
    {
        using var p = Start(Cli.Binary, args, env);
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return new Cli.Result(p.ExitCode, await o, await e);
    }

    [Fact]
    public async Task Check_names_every_problem_of_a_bad_agent_config_and_exits_1()
    {
        var file = Write("bad.json",
            """{ "Hots": "h1", "Underlay": "10.0.0.300", "Directory": "http://10.0.0.1:7472" }""");
        var r = await Run(["agent", "--config", file, "--check"]);
        Assert.Equal(1, r.Code);
        Assert.Equal("", r.Out);
        Assert.Contains($"capsule: warning: unknown key 'Hots' in {file} is ignored; did you mean 'Host'?", r.Err);
        Assert.Contains($"capsule: agent settings are not usable (from {file}):", r.Err);
        Assert.Contains("\n  - Host is missing: write this host's name", r.Err);
        Assert.Contains("\n  - Underlay: '10.0.0.300' is not an IPv4 address of this host", r.Err);

        var missing = await Run(["agent", "--config", Path.Combine(_dir, "none.json"), "--check"]);
        Assert.Equal(1, missing.Code);
        Assert.Contains($"config file {Path.Combine(_dir, "none.json")} does not exist", missing.Err);
    }

    [Fact]
    public async Task Check_prints_the_effective_settings_from_file_environment_and_options()
    {
        var file = Write("agent.json", """{ "Host": "h1", "Underlay": "10.0.0.5", "Directory": "unix:/run/d.sock" }""");
        var r = (await Run(["agent", "--config", file, "--check", "--underlay-mtu", "9000"],
            new() { ["CAPSULE_AGENT__PORT"] = "7000" })).Ok();
        using var json = JsonDocument.Parse(r.Out);
        var s = json.RootElement;
        Assert.Equal("h1", s.GetProperty("Host").GetString());
        Assert.Equal(7000, s.GetProperty("Port").GetInt32());
        Assert.Equal(9000, s.GetProperty("UnderlayMtu").GetInt32());
        Assert.Equal("http://10.0.0.5:7471", s.GetProperty("Listen").GetString());
        Assert.Contains("agent settings are usable (from " + file +
            ", then 1 environment variable CAPSULE_AGENT__*, then command-line options (UnderlayMtu))", r.Err);
    }

    [Fact]
    public async Task The_directory_check_needs_a_listen()
    {
        var r = await Run(["directory", "--config", Write("d.json", """{ "Pool": "100.64.0.0/16" }"""), "--check"]);
        Assert.Equal(1, r.Code);
        Assert.Contains("  - Listen is missing: write where to serve", r.Err);
        (await Run(["directory", "--config", Write("d2.json", """{ "Listen": "unix:/run/x.sock" }"""),
            "--check"])).Ok();
    }

    string DirectoryConfig() => Write("directory.json", JsonSerializer.Serialize(new
    {
        State = Path.Combine(_dir, "state"),
        Listen = "unix:" + Path.Combine(_dir, "directory.sock"),
        PidFile = Path.Combine(_dir, "directory.pid"),
    }));

    /// <summary>Lines of a daemon's standard output as they come, for waiting on one of them.</summary>
    static StringBuilder Collect(Process p)
    {
        var lines = new StringBuilder();
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (lines) lines.AppendLine(e.Data);
        };
        p.BeginOutputReadLine();
        return lines;
    }

    static string Text(StringBuilder lines)
    {
        lock (lines) return lines.ToString();
    }

    [Fact]
    public async Task A_directory_stops_on_SIGTERM_with_exit_code_0_and_logs_plain_single_lines()
    {
        using var p = Start(Cli.Binary, ["directory", "--config", DirectoryConfig()]);
        try
        {
            var log = Collect(p);
            await LabFixture.Until(() => Task.FromResult(Text(log).Contains("directory ready")), "directory ready", 30);
            Assert.True(File.Exists(Path.Combine(_dir, "directory.sock")));
            (await Cli.Exec("kill", ["-TERM", p.Id.ToString()])).Ok();
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(0, p.ExitCode);
            var text = Text(log);
            Assert.DoesNotContain('\u001b', text); // no colour codes when not on a terminal
            Assert.Contains("directory stopping (told to)", text);
            Assert.Contains("directory stopped", text);
            Assert.All(text.Split('\n', StringSplitOptions.RemoveEmptyEntries),
                l => Assert.Matches(@"^\d\d:\d\d:\d\d\.\d{3} (info|warn|fail|crit|dbug|trce): ", l));
            Assert.False(File.Exists(Path.Combine(_dir, "directory.sock")), "its socket is left behind");
            Assert.False(File.Exists(Path.Combine(_dir, "directory.pid")), "its pid file is left behind");
        }
        finally
        {
            if (!p.HasExited) p.Kill();
        }
    }

    /// <summary>
    /// Under systemd (a parent process named systemd, and NOTIFY_SOCKET) the daemon says READY=1 once it
    /// serves and STOPPING=1 when told to stop, and logs in the journal's format.
    /// </summary>
    [Fact]
    public async Task Under_systemd_a_directory_notifies_ready_and_stopping_and_logs_for_the_journal()
    {
        var fakeSystemd = Write("systemd", "#!/bin/sh\n\"$@\"\n"); // not exec: it stays the daemon's parent
        (await Cli.Exec("chmod", ["+x", fakeSystemd])).Ok();
        var notify = Path.Combine(_dir, "notify.sock");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(notify));
        using var p = Start(fakeSystemd, [Cli.Binary, "directory", "--config", DirectoryConfig()],
            new() { ["NOTIFY_SOCKET"] = notify });
        try
        {
            var log = Collect(p);
            Assert.Equal("READY=1", await Receive(socket));
            var pid = int.Parse(await File.ReadAllTextAsync(Path.Combine(_dir, "directory.pid")));
            (await Cli.Exec("kill", ["-TERM", pid.ToString()])).Ok();
            Assert.Equal("STOPPING=1", await Receive(socket));
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(0, p.ExitCode);
            var text = Text(log);
            Assert.Contains("directory ready", text);
            Assert.All(text.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => Assert.Matches(@"^<\d>", l));
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    static async Task<string> Receive(Socket socket)
    {
        var buffer = new byte[256];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
        return Encoding.UTF8.GetString(buffer, 0, n).Trim();
    }
}
