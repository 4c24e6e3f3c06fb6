using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Dir.Etcd;

namespace Capsule.Lab;

/// <summary>
/// A lab's etcd cluster (<c>lab up --directory etcd</c>): one member on each of the first hosts,
/// each the real etcd server in its host's network namespace, listening on its underlay address as
/// on a real machine. Agents reach the members over the underlay; the CLI, outside every lab
/// namespace, reaches them by a unix socket each member also serves in the lab's run folder.
/// </summary>
internal sealed class LabEtcd(LabPaths paths, Action<string> say)
{
    public const string Binary = "etcd";
    public const int ClientPort = 2379;
    public const int PeerPort = 2380;

    /// <summary>The agents' directory endpoint: every member over the underlay, mutual TLS.</summary>
    public static string AgentEndpoint(IEnumerable<LabRunner.HostEntry> members) =>
        DirectoryClient.Etcd(members.Select(m => $"https://{m.Underlay}:{ClientPort}"));

    /// <summary>The CLI's directory endpoint: every member's unix socket.</summary>
    public string CliEndpoint(IEnumerable<LabRunner.HostEntry> members) => DirectoryClient.Etcd(CliMembers(members));

    IEnumerable<string> CliMembers(IEnumerable<LabRunner.HostEntry> members) =>
        members.Select(m => "unix:" + Path.Combine(paths.RunDir, SocketName(m.Name)));

    // etcd takes a unix listener as host:port and makes the socket in its working folder.
    static string SocketName(string host) => $"etcd-{host}.sock:1";

    public static string? Missing() =>
        File.Exists("/usr/bin/" + Binary) ? null
            : "etcd is not installed: `apt-get install etcd-server` (or run scripts/setup.sh)";

    /// <summary>Starts every member (supervised, as systemd would), then writes the locator pool once.</summary>
    public async Task StartAsync(IReadOnlyList<LabRunner.HostEntry> members, CancellationToken ct)
    {
        if (Missing() is { } m) throw new InvalidOperationException(m);
        foreach (var h in members) Boot(h, members, initial: true);
        var etcd = new EtcdDirectory([.. CliMembers(members)]);
        await LabRunner.WaitAsync($"etcd ({members.Count} members)", paths.EtcdLog(members[0].Name), async () =>
        {
            await etcd.InitAsync(Prefix.Parse(LabPaths.Pool), ct);
            return true;
        }, ct);
    }

    /// <summary>Starts one member again after its host restarted: it rejoins with its data folder.</summary>
    public void Restart(LabRunner.HostEntry h, IReadOnlyList<LabRunner.HostEntry> members) =>
        Boot(h, members, initial: false);

    void Boot(LabRunner.HostEntry h, IReadOnlyList<LabRunner.HostEntry> members, bool initial)
    {
        say($"host {h.Name} ({h.Underlay}): etcd member");
        var data = paths.EtcdDataDir(h.Name);
        Directory.CreateDirectory(Path.GetDirectoryName(data)!);
        var cluster = string.Join(',', members.Select(m => $"{m.Name}=https://{m.Underlay}:{PeerPort}"));
        // The member's host certificate serves clients and peers; both must show one of the lab's CA. The unix
        // socket (the CLI's, in the root-only run folder) stays plain.
        var tls = LabTrust.For(paths, h.Name, h.Underlay);
        string[] etcd =
        [
            Binary, "--name", h.Name, "--data-dir", data,
            "--listen-client-urls", $"https://{h.Underlay}:{ClientPort},unix://{SocketName(h.Name)}",
            "--advertise-client-urls", $"https://{h.Underlay}:{ClientPort}",
            "--listen-peer-urls", $"https://{h.Underlay}:{PeerPort}",
            "--initial-advertise-peer-urls", $"https://{h.Underlay}:{PeerPort}",
            "--client-cert-auth", "--trusted-ca-file", tls.Ca!, "--cert-file", tls.Cert!, "--key-file", tls.Key!,
            "--peer-client-cert-auth", "--peer-trusted-ca-file", tls.Ca!, "--peer-cert-file", tls.Cert!,
            "--peer-key-file", tls.Key!,
            "--initial-cluster", cluster, "--initial-cluster-token", "capsule-" + paths.Name,
            "--initial-cluster-state", initial ? "new" : "existing",
            "--logger", "zap", "--log-outputs", "stderr",
        ];
        Self.StartDaemon(paths.EtcdLog(h.Name), Self.SupervisedCommand("etcd-" + h.Name,
            paths.EtcdSupervisorPidFile(h.Name), paths.EtcdPidFile(h.Name),
            // etcd writes no pid file: the shell writes its own pid, which exec hands on to etcd.
            ["sh", "-c", """echo $$ > "$0" && exec "$@" """, paths.EtcdPidFile(h.Name),
                "nsenter", $"--net={Netns.Dir}/{h.Netns}", $"--wd={paths.RunDir}", "--", .. etcd]));
    }
}
