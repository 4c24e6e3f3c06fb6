using System.Security.Cryptography;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Capsules that are containers (issue 13, `create --rootfs /`): their own user namespace (their root is an
/// unprivileged range of host ids), mount namespace and writable layer; and unmodified services in them that
/// switch users, moved across hosts with a client's connection open the whole time.
/// </summary>
[Collection("lab")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class ContainerTests(LabFixture lab)
{
    static readonly string[] OwnRoot = ["--rootfs", "/"];

    /// <summary>A folder of the host's, which a capsule sees through its lower layer (read-only to it).</summary>
    string Shared(string what)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"{lab.Name}-{what}");
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, (UnixFileMode)0x1ED); // 0755: the capsule's www-data reads it too
        return dir;
    }

    string CapsuleDir(string host, string name) =>
        Path.Combine(new LabPaths(lab.Name).HostStateDir(host), "capsules", name);

    [Fact]
    public async Task A_capsules_root_is_not_the_hosts_and_what_it_writes_stays_in_its_own_layer()
    {
        const string name = "ctrown";
        var (_, pid) = await lab.CreateWith(name, "h1", OwnRoot, "sleep", "infinity");
        try
        {
            var map = (await File.ReadAllTextAsync($"/proc/{pid}/uid_map")).Split(' ',
                StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("0", map[0]);
            var idBase = long.Parse(map[1]);
            Assert.True(idBase >= 65536, $"the capsule's root is host id {idBase}");
            Assert.Contains($"Uid:\t{idBase}", await File.ReadAllTextAsync($"/proc/{pid}/status"));
            // A container's capabilities (OCI's default set), and only its own processes in sight.
            Assert.Contains("CapBnd:\t00000000a80425fb", await File.ReadAllTextAsync($"/proc/{pid}/status"));
            var ps = (await lab.InCapsule(name, "ps", "-eo", "pid=")).Ok().Out;
            Assert.True(ps.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length <= 3, ps);
            // Root inside, yet the host's files are not its to change: a write lands in its own layer.
            var marker = $"/etc/{lab.Name}-marker";
            (await lab.InCapsule(name, "sh", "-c", $"id -u; echo inside > {marker}; cat {marker}")).Ok();
            Assert.False(File.Exists(marker), "the capsule wrote into the host's /etc");
            var copy = Path.Combine(CapsuleDir("h1", name), "upper", marker.TrimStart('/'));
            Assert.Equal("inside\n", await File.ReadAllTextAsync(copy));
            Assert.Equal(idBase, await OwnerAsync(copy));
            // `inspect` says so: its own namespaces (the cgroup one aside) and its id mapping.
            using (var doc = System.Text.Json.JsonDocument.Parse((await lab.Run("inspect", name, "--json")).Ok().Out))
            {
                var i = doc.RootElement;
                Assert.Equal(idBase, i.GetProperty("root").GetProperty("id_base").GetInt64());
                Assert.Equal("a80425fb", i.GetProperty("cap_bounding").GetString());
                var own = i.GetProperty("namespaces").EnumerateArray()
                    .Where(n => n.GetProperty("own").GetBoolean())
                    .Select(n => n.GetProperty("kind").GetString())
                    .ToHashSet();
                Assert.Equal(["ipc", "mnt", "net", "pid", "user", "uts"], own.Order());
            }
            // So does `ls --wide`, from each host's agent.
            using (var doc = System.Text.Json.JsonDocument.Parse((await lab.Run("ls", "--wide", "--json")).Ok().Out))
            {
                var row = doc.RootElement.EnumerateArray().Single(r => r.GetProperty("name").GetString() == name);
                Assert.Equal($"0-65535 -> {idBase}-{idBase + 65535}", row.GetProperty("users").GetString());
                Assert.Equal("/", row.GetProperty("root").GetString());
                Assert.Contains("user", row.GetProperty("own_namespaces").EnumerateArray().Select(n => n.GetString()));
            }
            Assert.Contains("OWN", (await lab.Run("ls", "--wide")).Ok().Out);
            // What the host keeps secret it does not read: the agents' state and keys, SSH host keys, password hashes.
            Assert.Empty((await lab.InCapsule(name, "ls", "-A", "/var/lib/capsule")).Ok().Out.Trim());
            Assert.NotEqual(0, (await lab.InCapsule(name, "cat", "/etc/ssh/ssh_host_ed25519_key")).Code);
            var shadow = (await lab.InCapsule(name, "cut", "-d:", "-f2", "/etc/shadow")).Ok().Out;
            Assert.All(shadow.Split('\n', StringSplitOptions.RemoveEmptyEntries),
                h => Assert.True(h is "*" or "!", $"a password hash shows: {h}"));
            // Its layer moves with it.
            var m = await lab.Migrate(name, "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.Equal("inside\n", (await lab.InCapsule(name, "cat", marker)).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", name);
        }
    }

    [Fact]
    public async Task Its_limits_hold_in_cgroups_of_its_own_and_come_back_with_it_after_a_move()
    {
        const string name = "ctlim";
        string[] limits = ["--memory", "64M", "--cpus", "0.5", "--pids", "40"];
        var (_, pid) = await lab.CreateWith(name, "h1", [.. OwnRoot, .. limits], "sleep", "infinity");
        string? now = null;
        try
        {
            var before = AssertLimits(pid, "h1");
            // What `exec` runs counts against them too; and the kernel holds the capsule to them.
            var inside = (await lab.InCapsule(name, "cat", "/proc/self/cgroup")).Ok().Out;
            Assert.Matches($"pids:.*/{lab.Name}-h1-c-{name}\n", inside);
            // 50 children that wait a second, all reaped (a zombie left to PID 1, `sleep`, could not be dumped):
            // past 40 processes, fork fails.
            var forks = (await lab.InCapsule(name, "python3", "-c", """
                import os, time
                kids, refused = [], 0
                for i in range(50):
                    try:
                        pid = os.fork()
                    except OSError:
                        refused += 1
                        continue
                    if pid == 0:
                        time.sleep(1)
                        os._exit(0)
                    kids.append(pid)
                for k in kids:
                    os.waitpid(k, 0)
                print("refused", refused)
                """)).Ok().Out;
            Assert.True(int.Parse(forks.Split(' ')[1]) >= 10, forks);

            var m = await lab.Migrate(name, "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            now = AssertLimits(m.GetProperty("pid").GetInt32(), "h2");
            Assert.False(Directory.Exists(before), "the old host kept the capsule's cgroup");
        }
        finally
        {
            await lab.Run("rm", name);
        }
        Assert.False(Directory.Exists(now), "rm left the capsule's cgroup");
    }

    /// <summary>
    /// Its cgroups, one per limit, are named after it and the host it runs on, and hold its limits; returns its
    /// pids cgroup's folder.
    /// </summary>
    string AssertLimits(int pid, string host)
    {
        var own = $"{lab.Name}-{host}-c-ctlim";
        var groups = File.ReadAllLines($"/proc/{pid}/cgroup")
            .Select(l => l.Split(':', 3))
            .ToDictionary(p => p[1], p => p[2]);
        string Limit(string controller, string file) =>
            File.ReadAllText(Path.Combine("/sys/fs/cgroup/" + controller + groups[controller], file)).Trim();
        foreach (var controller in (string[])["memory", "cpu", "pids"])
            Assert.EndsWith("/" + own, groups[controller]);
        Assert.Equal((64L << 20).ToString(), Limit("memory", "memory.limit_in_bytes"));
        Assert.Equal("50000", Limit("cpu", "cpu.cfs_quota_us"));
        Assert.Equal("40", Limit("pids", "pids.max"));
        return "/sys/fs/cgroup/pids" + groups["pids"];
    }

    [Fact]
    public async Task Nginx_with_www_data_workers_serves_100_MB_across_a_migration_intact()
    {
        var www = Shared("www");
        var blob = new byte[100 << 20];
        Random.Shared.NextBytes(blob);
        await File.WriteAllBytesAsync(Path.Combine(www, "blob"), blob);
        var want = Convert.ToHexStringLower(SHA256.HashData(blob));
        var conf = Path.Combine(www, "nginx.conf");
        await File.WriteAllTextAsync(conf, $$"""
            daemon off; user www-data; worker_processes 2; pid /run/nginx-capsule.pid; error_log stderr;
            events { worker_connections 64; }
            http { access_log off; sendfile on; server { listen 8080; root {{www}}; } }
            """);
        var got = Path.Combine(Shared("got"), "blob");
        try
        {
            var (web, _) = await lab.CreateWith("ngx", "h1", OwnRoot, "nginx", "-c", conf);
            await lab.Create("ngxget", "h3", "sleep", "infinity");
            await lab.WaitForPort("ngxget", web, 8080);
            Assert.Contains("www-data", (await lab.InCapsule("ngx", "ps", "-eo", "user=")).Ok().Out);
            // Slow enough to be under way when the capsule moves.
            var get = lab.InCapsule("ngxget", "curl", "-sS", "--fail", "--limit-rate", "20M", "-o", got,
                $"http://{web}:8080/blob");
            await LabFixture.Until(() => Task.FromResult(File.Exists(got) && new FileInfo(got).Length > 10 << 20),
                "the download to be under way");
            var m = await lab.Migrate("ngx", "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.True(new FileInfo(got).Length < 100 << 20, "the download ended before the move");
            (await get).Ok();
            Assert.Equal(want, Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(got))));
            Assert.Contains("www-data", (await lab.InCapsule("ngx", "ps", "-eo", "user=")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "ngx");
            await lab.Run("rm", "ngxget");
            Directory.Delete(www, recursive: true);
            Directory.Delete(Path.GetDirectoryName(got)!, recursive: true);
        }
    }

    [Fact]
    public async Task A_postgres_transaction_open_across_a_migration_commits_after_it()
    {
        // initdb and the server as user postgres, in the capsule's own layer; any client may connect.
        const string pg = "/usr/lib/postgresql/15/bin";
        const string user = "setpriv --reuid=postgres --regid=postgres --init-groups";
        var (db, _) = await lab.CreateWith("pg", "h1", OwnRoot, "sh", "-c",
            $"set -e; d=/var/lib/capsule-pg; mkdir -p $d; chown postgres:postgres $d; " +
            $"{user} {pg}/initdb -D $d --auth=trust -U postgres >/dev/null; " +
            "echo 'host all all 0.0.0.0/0 trust' >> $d/pg_hba.conf; " +
            $"exec {user} {pg}/postgres -D $d -c listen_addresses='*' -k /tmp");
        try
        {
            // psql reads what the test appends to a file in its capsule's folder, one session throughout.
            await lab.Create("pgcli", "h3", "sleep", "infinity");
            await lab.WaitForPort("pgcli", db, 5432);
            await lab.Run("rm", "pgcli");
            await lab.Create("pgcli", "h3", "sh", "-c",
                $"touch q.sql; tail -f q.sql | psql -h {db} -U postgres -At -v ON_ERROR_STOP=1");
            var sql = Path.Combine(CapsuleDir("h3", "pgcli"), "q.sql");
            await File.AppendAllTextAsync(sql,
                "CREATE TABLE t(v int); BEGIN; INSERT INTO t VALUES (1); SELECT 'open', pg_backend_pid();\n");
            var open = await lab.WaitForLog("pgcli", "open|");

            var m = await lab.Migrate("pg", "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            await File.AppendAllTextAsync(sql,
                "INSERT INTO t VALUES (2); COMMIT; SELECT 'done', count(*), pg_backend_pid() FROM t;\n");
            var done = await lab.WaitForLog("pgcli", "done|");

            var backend = open.Split('\n').First(l => l.StartsWith("open|", StringComparison.Ordinal))[5..];
            Assert.Contains($"done|2|{backend}", done);
            Assert.Contains("postgres", (await lab.InCapsule("pg", "ps", "-eo", "user=")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "pgcli");
            await lab.Run("rm", "pg");
        }
    }

    [Fact]
    public async Task An_ssh_session_to_a_privilege_separated_sshd_goes_on_across_a_migration()
    {
        var keys = Shared("ssh");
        var key = Path.Combine(keys, "key");
        (await Cli.Exec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key])).Ok();
        File.SetUnixFileMode(key + ".pub", (UnixFileMode)0x1A4); // 0644: the capsule's root copies it
        try
        {
            // A user of the capsule's own (its /etc/passwd is in its layer), allowed in by key only.
            var (server, _) = await lab.CreateWith("sshd", "h1", OwnRoot, "sh", "-c",
                "set -e; ssh-keygen -A; useradd -m -p '*' -s /bin/sh mover; mkdir -p /run/sshd /home/mover/.ssh; " +
                $"cp {key}.pub /home/mover/.ssh/authorized_keys; chown -R mover:mover /home/mover/.ssh; " +
                "chmod 700 /home/mover/.ssh; exec /usr/sbin/sshd -D -e -o UsePAM=no");
            await lab.Create("sshcli", "h3", "sleep", "infinity");
            await lab.WaitForPort("sshcli", server, 22);
            await lab.Run("rm", "sshcli");
            await lab.Create("sshcli", "h3", "sh", "-c",
                $"touch in.txt; tail -f in.txt | ssh -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no " +
                $"-o UserKnownHostsFile=/dev/null mover@{server} " +
                "'while read l; do echo \"got $l as $(id -un) in $(hostname)\"; done'");
            var input = Path.Combine(CapsuleDir("h3", "sshcli"), "in.txt");
            await File.AppendAllTextAsync(input, "before\n");
            await lab.WaitForLog("sshcli", "got before as mover in sshd");
            // Privilege separation: a root monitor and the session's process as the user.
            var users = (await lab.InCapsule("sshd", "ps", "-eo", "user=,args=")).Ok().Out;
            Assert.Contains("mover", users);

            var m = await lab.Migrate("sshd", "h2");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            await File.AppendAllTextAsync(input, "after\n");
            await lab.WaitForLog("sshcli", "got after as mover in sshd");
            Assert.DoesNotContain("closed", await lab.Logs("sshcli", stderr: true));
        }
        finally
        {
            await lab.Run("rm", "sshcli");
            await lab.Run("rm", "sshd");
            Directory.Delete(keys, recursive: true);
        }
    }

    static async Task<long> OwnerAsync(string path) =>
        long.Parse((await Cli.Exec("stat", ["-c", "%u", path])).Ok().Out.Trim());
}
