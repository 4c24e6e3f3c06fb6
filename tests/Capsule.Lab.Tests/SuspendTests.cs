using System.Text.Json;
using Capsule.Lab;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>Suspend a capsule to one file and resume it later on any host, with real CRIU and real TCP.</summary>
[Collection("lab")]
public sealed class SuspendTests(LabFixture lab) : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-suspend-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task A_capsule_suspended_for_seconds_and_resumed_elsewhere_keeps_its_tcp_stream()
    {
        var (srv, _) = await lab.Create("zsrv", "h1", Stream("server", "7010"));
        await lab.WaitForLog("zsrv", "LISTENING");
        await lab.Create("zcli", "h2", Stream("client", srv, "7010", "10"));
        var file = Path.Combine(_dir, "zsrv.capsule");
        try
        {
            await lab.WaitForLog("zcli", "PROGRESS sent=");
            var s = (await lab.Run("suspend", "zsrv", "--to", file, "--json")).Ok();
            using (var doc = JsonDocument.Parse(s.Out))
                Assert.Equal(1, doc.RootElement.GetProperty("peers").GetInt32()); // h2 holds the client's packets
            using (var ls = JsonDocument.Parse((await lab.Run("ls", "--json")).Ok().Out))
            {
                var me = ls.RootElement.EnumerateArray().Single(e => e.GetProperty("name").GetString() == "zsrv");
                Assert.Equal("suspended", me.GetProperty("state").GetString());
                Assert.Equal(file, me.GetProperty("file").GetString());
            }
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h1-c-zsrv"));
            // The capsule's memory, on the operator's disk: for the operator alone.
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
            Assert.Contains("zsrv", (await lab.Run("inspect", file)).Ok().Out);
            using (var doc = JsonDocument.Parse((await lab.Run("inspect", file, "--json")).Ok().Out))
            {
                var meta = doc.RootElement.GetProperty("meta");
                Assert.Equal(srv, meta.GetProperty("locator").GetString());
                Assert.Contains(meta.GetProperty("connections").EnumerateArray(),
                    c => c.GetString()!.StartsWith("ESTAB") && c.GetString()!.Contains(srv + ":7010"));
                Assert.Contains(meta.GetProperty("processes").EnumerateArray(),
                    p => p.GetProperty("pid").GetInt32() == 1
                        && p.GetProperty("command").GetString()!.Contains("stream.py"));
                Assert.Equal(new FileInfo(file).Length, doc.RootElement.GetProperty("size").GetInt64());
            }
            // Suspended for seconds: the client keeps sending into h2's hold and, while the server is
            // gone, hears nothing back. Wait for six more of its progress lines (about 3 s); apart from
            // the first (an echo may still have been on its way), every one shows the same echoed count.
            static long[] Echoes(string log) =>
                [.. log.Split('\n').Where(l => l.StartsWith("PROGRESS ")).Select(LabFixture.Echoed)];
            var seen = Echoes(await lab.Logs("zcli")).Length;
            long[] echoes = [];
            await LabFixture.Until(async () =>
            {
                var log = await lab.Logs("zcli");
                Assert.DoesNotContain("ERROR", log);
                return (echoes = Echoes(log)[seen..]).Length >= 6;
            }, "zcli to report progress while its server is suspended", seconds: 30);
            Assert.All(echoes[1..], e => Assert.Equal(echoes[1], e));
            var r = (await lab.Run("resume", file, "--on", "h3", "--json")).Ok();
            using (var doc = JsonDocument.Parse(r.Out))
                Assert.Equal("h3", doc.RootElement.GetProperty("host").GetString());
            var done = await lab.WaitForLog("zcli", "DONE");
            var line = done.Split('\n').Single(l => l.StartsWith("DONE"));
            Assert.Contains($"echoed={line.Split(' ')[1][5..]}", line);
            Assert.DoesNotContain("ERROR", await lab.Logs("zsrv"));
        }
        finally
        {
            await lab.Run("rm", "zcli");
            await lab.Run("rm", "zsrv");
        }
    }

    [Fact]
    public async Task A_suspended_file_copied_elsewhere_resumes_after_the_hosts_restarted_and_counts_on()
    {
        await lab.Create("counter", "h1", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done");
        var first = Path.Combine(_dir, "counter.capsule");
        var moved = Path.Combine(_dir, "elsewhere", "counter.capsule");
        try
        {
            await lab.WaitForLog("counter", "\n10\n");
            (await lab.Run("suspend", "counter", "--to", first)).Ok();
            Directory.CreateDirectory(Path.GetDirectoryName(moved)!);
            File.Copy(first, moved);
            File.Delete(first);
            (await lab.Run("lab", "restart")).Ok();
            (await lab.Run("resume", moved, "--on", "h2")).Ok();
            var log = await lab.Logs("counter");
            var last = int.Parse(log.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last());
            log = await lab.WaitForLog("counter", $"\n{last + 10}\n");
            var numbers = log.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();
            Assert.Equal(Enumerable.Range(1, numbers.Count), numbers); // no restart from 1, no gap, no repeat
        }
        finally
        {
            await lab.Run("rm", "counter");
        }
    }

    [Fact]
    public async Task Bad_resumes_get_a_clear_error_and_change_nothing()
    {
        await lab.Create("sleepy", "h1", "sleep", "infinity");
        var file = Path.Combine(_dir, "sleepy.capsule");
        try
        {
            (await lab.Run("suspend", "sleepy", "--to", file)).Ok();
            var exists = await lab.Run("suspend", "sleepy", "--to", file);
            Assert.Equal(1, exists.Code);
            var before = (await lab.Run("ls", "--json")).Ok().Out;

            var truncated = Path.Combine(_dir, "truncated.capsule");
            var bytes = await File.ReadAllBytesAsync(file);
            await File.WriteAllBytesAsync(truncated, bytes[..(bytes.Length / 2)]);
            var r = await lab.Run("resume", truncated, "--on", "h2");
            Assert.Equal(1, r.Code);
            Assert.Contains("truncated", r.Err);

            var tampered = Path.Combine(_dir, "tampered.capsule");
            bytes[bytes.Length / 2] ^= 0x5A;
            await File.WriteAllBytesAsync(tampered, bytes);
            r = await lab.Run("resume", tampered, "--on", "h2");
            Assert.Equal(1, r.Code);
            Assert.Contains("checksum", r.Err);
            Assert.Contains("checksum", (await lab.Run("inspect", tampered)).Err);

            var notOurs = Path.Combine(_dir, "not-a-capsule");
            await File.WriteAllTextAsync(notOurs, "hello");
            r = await lab.Run("resume", notOurs, "--on", "h2");
            Assert.Equal(1, r.Code);
            Assert.Contains("not a capsule suspend file", r.Err);

            // A cordoned host (draining, or kept for maintenance) takes no capsule, also not from a file.
            (await lab.Run("cordon", "h2")).Ok();
            try
            {
                r = await lab.Run("resume", file, "--on", "h2");
                Assert.Equal(1, r.Code);
                Assert.Contains("cordoned", r.Err);
            }
            finally
            {
                (await lab.Run("uncordon", "h2")).Ok();
            }

            Assert.Equal(before, (await lab.Run("ls", "--json")).Ok().Out);
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h2-c-sleepy"));

            (await lab.Run("resume", file, "--on", "h2")).Ok();
            var running = (await lab.Run("ls", "--json")).Ok().Out;
            r = await lab.Run("resume", file, "--on", "h3");
            Assert.Equal(1, r.Code);
            Assert.Contains("resumed already", r.Err);
            Assert.Equal(running, (await lab.Run("ls", "--json")).Ok().Out);

            // Suspend again, then remove it: the locator goes back to the pool, and the file is refused.
            var again = Path.Combine(_dir, "again.capsule");
            (await lab.Run("suspend", "sleepy", "--to", again)).Ok();
            (await lab.Run("rm", "sleepy")).Ok();
            var released = (await lab.Run("ls", "--json")).Ok().Out;
            r = await lab.Run("resume", again, "--on", "h2");
            Assert.Equal(1, r.Code);
            Assert.Contains("released", r.Err);
            Assert.Equal(released, (await lab.Run("ls", "--json")).Ok().Out);
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h2-c-sleepy"));
        }
        finally
        {
            await lab.Run("rm", "sleepy");
        }
    }

    /// <summary>Files in a host's own state folder (each agent has its own, bound at the common view).</summary>
    string[] HostFiles(string host, string folder)
    {
        var dir = Path.Combine(new LabPaths(lab.Name).HostStateDir(host), folder);
        return Directory.Exists(dir) ? Directory.GetFiles(dir) : [];
    }

    /// <summary>
    /// The CLI and the agent share no path: the file comes back to the CLI over gRPC and the host
    /// keeps no copy once the CLI confirmed it; a CLI that goes away mid-transfer loses nothing (the
    /// host keeps the file until it is fetched); a resume sends the file from wherever it is, and a
    /// damaged one is refused with nothing of the capsule built and nothing left on the host.
    /// </summary>
    [Fact]
    public async Task The_file_travels_over_grpc_and_no_host_keeps_a_copy()
    {
        await lab.Create("carry", "h1", "sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done");
        var file = Path.Combine(_dir, "carry.capsule");
        var elsewhere = Directory.CreateTempSubdirectory("capsule-elsewhere-").FullName;
        try
        {
            await lab.WaitForLog("carry", "\n5\n");
            var s = (await lab.Run("suspend", "carry", "--to", file, "--json")).Ok();
            using (var doc = JsonDocument.Parse(s.Out))
                Assert.Equal(new FileInfo(file).Length, doc.RootElement.GetProperty("bytes").GetInt64());
            Assert.Equal([file], Directory.GetFiles(_dir)); // no partial file beside it
            Assert.Empty(HostFiles("h1", "suspended"));
            var gone = await lab.Run("suspend", "carry", "--to", Path.Combine(_dir, "again.capsule"), "--fetch");
            Assert.Equal(1, gone.Code);
            Assert.Contains("keeps no file", gone.Err);
            Assert.False(File.Exists(Path.Combine(_dir, "again.capsule")));

            // Resumed from a folder the suspend never saw, then suspended by a "CLI" that reads the
            // header and goes away: the capsule is suspended, and h2 keeps its only file until fetched.
            var moved = Path.Combine(elsewhere, "carry.capsule");
            File.Move(file, moved);
            (await lab.Run("resume", moved, "--on", "h2")).Ok();
            Assert.Empty(HostFiles("h2", "incoming"));
            await lab.WaitForLog("carry", "\n10\n");
            var agent = new HostAgent.HostAgentClient(Channels.For(new LabPaths(lab.Name).AgentEndpoint("h2")));
            using (var cut = new CancellationTokenSource())
            {
                using var call = agent.Suspend(new SuspendRequest { Name = "carry", File = "/nowhere/carry.capsule" },
                    cancellationToken: cut.Token);
                Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
                Assert.True(call.ResponseStream.Current.Size > 0);
                await cut.CancelAsync();
            }
            await LabFixture.Until(async () =>
                (await lab.Run("ls", "--json")).Ok().Out.Contains("\"suspended\""), "carry to be suspended");
            Assert.Single(HostFiles("h2", "suspended"));
            var fetched = Path.Combine(elsewhere, "fetched.capsule");
            (await lab.Run("suspend", "carry", "--to", fetched, "--fetch")).Ok();
            Assert.Empty(HostFiles("h2", "suspended"));
            Assert.Contains("carry", (await lab.Run("inspect", fetched)).Ok().Out);

            // Damaged copies: a clear error naming the CLI's file, nothing built, nothing left on h3.
            var before = (await lab.Run("ls", "--json")).Ok().Out;
            var bytes = await File.ReadAllBytesAsync(fetched);
            var truncated = Path.Combine(elsewhere, "truncated.capsule");
            await File.WriteAllBytesAsync(truncated, bytes[..(bytes.Length - 1000)]);
            var r = await lab.Run("resume", truncated, "--on", "h3");
            Assert.Equal(1, r.Code);
            Assert.Contains($"{truncated} is truncated", r.Err);
            var corrupt = Path.Combine(elsewhere, "corrupt.capsule");
            bytes[bytes.Length / 3] ^= 0x5A;
            await File.WriteAllBytesAsync(corrupt, bytes);
            r = await lab.Run("resume", corrupt, "--on", "h3");
            Assert.Equal(1, r.Code);
            Assert.Contains($"{corrupt} fails its checksum", r.Err);
            Assert.Equal(before, (await lab.Run("ls", "--json")).Ok().Out);
            Assert.False(File.Exists($"/run/netns/{lab.Name}-h3-c-carry"));
            Assert.Empty(HostFiles("h3", "incoming"));
            Assert.False(Directory.Exists(
                Path.Combine(new LabPaths(lab.Name).HostStateDir("h3"), "capsules", "carry")));

            r = (await lab.Run("resume", fetched, "--on", "h3", "--json")).Ok();
            using (var doc = JsonDocument.Parse(r.Out))
                Assert.Equal(new FileInfo(fetched).Length, doc.RootElement.GetProperty("bytes").GetInt64());
            Assert.Empty(HostFiles("h3", "incoming"));
            var log = await lab.Logs("carry");
            var last = int.Parse(log.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last());
            log = await lab.WaitForLog("carry", $"\n{last + 5}\n");
            var numbers = log.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();
            Assert.Equal(Enumerable.Range(1, numbers.Count), numbers); // two suspends, no restart, no gap
        }
        finally
        {
            await lab.Run("rm", "carry");
            Directory.Delete(elsewhere, recursive: true);
        }
    }
}
