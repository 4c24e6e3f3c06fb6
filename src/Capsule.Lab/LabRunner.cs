using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using Capsule.Agent.Linux;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Lab;

/// <summary>
/// A lab: simulated hosts h1..hN as network namespaces on one underlay segment (a bridge in a
/// namespace of its own), the embedded directory, and one agent per host. Everything it makes is
/// named with the lab's prefix and written down before it is made, so `down` removes all of it,
/// also after a crash.
/// </summary>
internal sealed partial class LabRunner(LabPaths paths, Action<string>? progress = null)
{
    public sealed record HostEntry(string Name, string Underlay, string Endpoint, string Netns, string Serves = "",
        string IcmpFrom = "");
    public sealed record LegacyEntry(string Name, string Address, string Netns);
    /// <summary>
    /// What a lab is made of. <see cref="Directory"/> is the CLI's way to the directory,
    /// <see cref="AgentDirectory"/> the agents' (they differ for etcd: sockets outside, the underlay inside).
    /// </summary>
    public sealed record Record(string Name, List<HostEntry> Hosts, string Directory)
    {
        public List<LegacyEntry> Legacy { get; init; } = [];
        public string? AgentDirectory { get; set; }
        /// <summary>The hosts that run an etcd member (none: the embedded directory).</summary>
        public List<string> EtcdMembers { get; init; } = [];
        public string AgentsDirectory => AgentDirectory ?? Directory;
    }

    /// <summary>
    /// Which directory a lab runs: the embedded one, or an etcd cluster of <see cref="EtcdMembers"/>.
    /// </summary>
    public sealed record DirectoryChoice(bool Etcd, int EtcdMembers)
    {
        public static readonly DirectoryChoice Embedded = new(false, 0);
    }

    /// <summary>Each host agent serves /metrics on its underlay address at this port (inside the lab only).</summary>
    public const int MetricsPort = 9464;

    public LabPaths Paths => paths;
    void Say(string s) => progress?.Invoke(s);

    public Record? Load() =>
        File.Exists(paths.RecordFile)
            ? JsonSerializer.Deserialize(File.ReadAllText(paths.RecordFile), LabRecordJson.Default.Record)
            : null;

    public bool Exists => File.Exists(paths.RecordFile) || Netns.List().Any(paths.Owns);

    public async Task<Record> UpAsync(int hosts, CancellationToken ct, int legacy = 0,
        DirectoryChoice? directory = null)
    {
        directory ??= DirectoryChoice.Embedded;
        if (hosts is < 1 or > 200) throw new ArgumentException("--hosts must be between 1 and 200");
        if (legacy is < 0 or > 200) throw new ArgumentException("--legacy must be between 0 and 200");
        if (directory.Etcd && (directory.EtcdMembers < 1 || directory.EtcdMembers > hosts))
            throw new ArgumentException($"--etcd-members must be between 1 and the number of hosts ({hosts})");
        if (directory.Etcd && LabEtcd.Missing() is { } missing) throw new ArgumentException(missing);
        if (Exists)
            throw new InvalidOperationException($"lab '{paths.Name}' is already up (or left over from a crash); " +
                $"run `capsule lab down{(paths.Name == LabPaths.DefaultName ? "" : " --lab " + paths.Name)}` first");
        LabContext.CheckFree(paths);
        try
        {
            var record = await BuildAsync(hosts, legacy, directory, ct);
            LabContext.Write(paths);
            return record;
        }
        catch
        {
            Say("lab up failed; removing what was made");
            await DownAsync(CancellationToken.None);
            throw;
        }
    }

    async Task<Record> BuildAsync(int hosts, int legacy, DirectoryChoice choice, CancellationToken ct)
    {
        Directory.CreateDirectory(paths.RunDir);
        Directory.CreateDirectory(paths.StateDir);
        var record = new Record(paths.Name, [], paths.DirectoryEndpoint);
        Save(record);

        Say($"underlay segment {LabPaths.UnderlaySubnet}.0/24");
        await SegmentAsync(paths.UnderlayNetns);

        for (var i = 1; i <= hosts; i++)
        {
            var h = $"h{i}";
            var entry = new HostEntry(h, paths.Underlay(i), paths.AgentEndpoint(h), paths.HostNetns(h));
            record.Hosts.Add(entry);
            Save(record);
            await PlugInAsync(entry);
        }
        if (legacy > 0) await BuildLegacyAsync(record, legacy);

        if (choice.Etcd)
            record = await StartEtcdAsync(record, choice.EtcdMembers, ct);
        else
            record = await StartEmbeddedAsync(record, ct);
        var directory = DirectoryClient.Open(record.Directory);

        foreach (var h in record.Hosts) BootAgent(h, record.AgentsDirectory);
        foreach (var h in record.Hosts) await WaitForAgentAsync(h, directory, ct);
        await WaitForKeysAsync(record.Hosts, ct);
        return record;
    }

    /// <summary>The embedded directory on a host of its own; the CLI reaches it by its control socket.</summary>
    async Task<Record> StartEmbeddedAsync(Record record, CancellationToken ct)
    {
        Say($"directory ({LabPaths.DirectoryUnderlay})");
        record.AgentDirectory = LabPaths.DirectoryApi;
        Save(record);
        await BootDirectoryAsync();
        var directory = new RemoteDirectory(paths.DirectoryEndpoint);
        await WaitAsync("the directory", paths.DirectoryLog, async () =>
        {
            await directory.SnapshotAsync(ct);
            return true;
        }, ct);
        return record;
    }

    async Task<Record> StartEtcdAsync(Record record, int count, CancellationToken ct)
    {
        var members = record.Hosts.Take(count).ToList();
        var etcd = new LabEtcd(paths, Say);
        record = record with { Directory = etcd.CliEndpoint(members), EtcdMembers = [.. members.Select(m => m.Name)] };
        record.AgentDirectory = LabEtcd.AgentEndpoint(members);
        Save(record);
        await etcd.StartAsync(members, ct);
        return record;
    }

    /// <summary>
    /// Ordinary hosts l1..lM (plain namespaces, no agent) on a segment of their own, and the gateway
    /// between that segment and the underlay; the locator pool is routed to the gateway there.
    /// </summary>
    async Task BuildLegacyAsync(Record record, int legacy)
    {
        Say($"ordinary hosts' segment {LabPaths.LegacyNet} and gateway {LabPaths.GatewayName}");
        var ls = paths.LegacySegmentNetns;
        await SegmentAsync(ls);
        var gw = new HostEntry(LabPaths.GatewayName, LabPaths.GatewayUnderlay,
            paths.AgentEndpoint(LabPaths.GatewayName), paths.HostNetns(LabPaths.GatewayName), LabPaths.LegacyNet,
            LabPaths.GatewayLegacyAddress);
        record.Hosts.Add(gw);
        Save(record);
        await PlugInAsync(gw);
        for (var i = 1; i <= legacy; i++)
        {
            var l = new LegacyEntry($"l{i}", paths.LegacyAddress(i), paths.HostNetns($"l{i}"));
            record.Legacy.Add(l);
            Save(record);
            await Netns.AddAsync(l.Netns);
            await Netns.SysctlAsync(l.Netns, "net.ipv6.conf.all.disable_ipv6", "1");
            await Cmd.Ip(l.Netns, "link", "add", "eth0", "type", "veth", "peer", "name", l.Name, "netns", ls);
            await Cmd.Ip(ls, "link", "set", l.Name, "master", "br0", "up");
            await Cmd.Ip(l.Netns, "addr", "add", l.Address + "/24", "dev", "eth0");
            await Cmd.Ip(l.Netns, "link", "set", "eth0", "up");
            // An ordinary host: it knows nothing of capsules, only that the pool is behind a router.
            await Cmd.Ip(l.Netns, "route", "add", LabPaths.Pool, "via", LabPaths.GatewayLegacyAddress);
        }
    }

    /// <summary>A network segment: a bridge in a namespace of its own, which hosts plug into.</summary>
    static async Task SegmentAsync(string netns)
    {
        await Netns.AddAsync(netns);
        await Netns.SysctlAsync(netns, "net.ipv6.conf.all.disable_ipv6", "1");
        await Cmd.Ip(netns, "link", "add", "br0", "type", "bridge");
        await Cmd.Ip(netns, "link", "set", "br0", "up");
    }

    /// <summary>A host's namespace and its link to the underlay segment.</summary>
    async Task PlugInAsync(HostEntry h)
    {
        var ul = paths.UnderlayNetns;
        await Netns.AddAsync(h.Netns);
        await Netns.SysctlAsync(h.Netns, "net.ipv6.conf.all.disable_ipv6", "1");
        await Netns.SysctlAsync(h.Netns, "net.ipv6.conf.default.disable_ipv6", "1");
        await Cmd.Ip(h.Netns, "link", "add", "ul0", "type", "veth", "peer", "name", h.Name, "netns", ul);
        await Cmd.Ip(ul, "link", "set", h.Name, "master", "br0", "up");
        await Cmd.Ip(h.Netns, "addr", "add", h.Underlay + "/24", "dev", "ul0");
        await Cmd.Ip(h.Netns, "link", "set", "ul0", "up");
        if (h.IcmpFrom.Length > 0)
        {
            // The gateway's other leg, on the ordinary hosts' segment.
            var ls = paths.LegacySegmentNetns;
            await Cmd.Ip(h.Netns, "link", "add", "lg0", "type", "veth", "peer", "name", h.Name, "netns", ls);
            await Cmd.Ip(ls, "link", "set", h.Name, "master", "br0", "up");
            await Cmd.Ip(h.Netns, "addr", "add", h.IcmpFrom + "/24", "dev", "lg0");
            await Cmd.Ip(h.Netns, "link", "set", "lg0", "up");
        }
    }

    async Task WaitForAgentAsync(HostEntry h, IDirectory directory, CancellationToken ct)
    {
        var agent = new Protos.HostAgent.HostAgentClient(Channels.For(h.Endpoint));
        await WaitAsync($"agent {h.Name}", paths.AgentLog(h.Name), async () =>
        {
            await agent.StatsAsync(new Empty(), cancellationToken: ct);
            return (await directory.SnapshotAsync(ct)).Hosts.ContainsKey(h.Name);
        }, ct);
    }

    /// <summary>
    /// Until every agent has data-plane keys both ways with every other host (keys go over the control channel
    /// once the hosts see each other in the directory): a lab is up when a capsule's first packet gets through.
    /// </summary>
    async Task WaitForKeysAsync(IReadOnlyList<HostEntry> hosts, CancellationToken ct)
    {
        foreach (var h in hosts)
        {
            var agent = new Protos.HostAgent.HostAgentClient(Channels.For(h.Endpoint));
            await WaitAsync($"agent {h.Name}'s data-plane keys", paths.AgentLog(h.Name), async () =>
            {
                var counters = (await agent.StatsAsync(new Empty(), cancellationToken: ct)).Counters
                    .ToDictionary(c => c.Name, c => c.Value);
                return counters["peer_hosts"] == hosts.Count - 1 && counters["peer_hosts_keyed"] == hosts.Count - 1;
            }, ct);
        }
    }

    /// <summary>
    /// Restarts simulated hosts as a reboot would: the agent and every process on the host are
    /// killed, its namespaces (the capsules' too) are removed and made again, and a new agent
    /// starts. Its disk (state folder) and the directory are kept.
    /// </summary>
    public async Task RestartAsync(IReadOnlyCollection<string> hosts, CancellationToken ct)
    {
        var record = Load() ?? throw new InvalidOperationException($"lab '{paths.Name}' is not up");
        var chosen = hosts.Count == 0 ? record.Hosts : record.Hosts.Where(h => hosts.Contains(h.Name)).ToList();
        foreach (var name in hosts)
            if (record.Hosts.All(h => h.Name != name))
                throw new ArgumentException($"no host '{name}' in lab '{paths.Name}'");
        foreach (var h in chosen)
        {
            Say($"host {h.Name}: power off");
            // The supervisor first, or it would restart the agent being stopped.
            await StopDaemonsAsync([paths.AgentSupervisorPidFile(h.Name)], ct);
            await StopDaemonsAsync([paths.AgentPidFile(h.Name)], ct);
            if (record.EtcdMembers.Contains(h.Name))
            {
                await StopDaemonsAsync([paths.EtcdSupervisorPidFile(h.Name)], ct);
                await StopDaemonsAsync([paths.EtcdPidFile(h.Name)], ct);
            }
            foreach (var ns in Netns.List().Where(n => n.StartsWith(h.Netns + "-c-", StringComparison.Ordinal))
                .Append(h.Netns).ToList())
            {
                await Netns.KillAllAsync(ns);
                await Netns.DeleteAsync(ns);
            }
            // The kernel takes a host's namespace apart after it is deleted, in its own time, and its cables' other
            // ends with it: cut them now, or plugging the host in again can find them still there ("File exists").
            await Cmd.TryIp(paths.UnderlayNetns, "link", "del", h.Name);
            if (h.IcmpFrom.Length > 0) await Cmd.TryIp(paths.LegacySegmentNetns, "link", "del", h.Name);
            await PlugInAsync(h);
            if (record.EtcdMembers.Contains(h.Name))
                new LabEtcd(paths, Say).Restart(h, [.. record.Hosts.Where(m => record.EtcdMembers.Contains(m.Name))]);
            BootAgent(h, record.AgentsDirectory);
        }
        var directory = DirectoryClient.Open(record.Directory);
        foreach (var h in chosen) await WaitForAgentAsync(h, directory, ct);
        try
        {
            await WaitForKeysAsync(record.Hosts, ct);
        }
        catch (TimeoutException e)
        {
            // Another host's agent may be down on purpose (a test stopped it): the lab is up all the same.
            Say("warning: " + e.Message.Split('\n')[0]);
        }
    }

    void Save(Record r)
    {
        var tmp = paths.RecordFile + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(r, LabRecordJson.Default.Record));
        File.Move(tmp, paths.RecordFile, overwrite: true);
    }

    internal static async Task WaitAsync(string what, string log, Func<Task<bool>> probe, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        string? last = null;
        while (sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            try
            {
                if (await probe()) return;
            }
            catch (Exception e) when (e is RpcException or DirectoryException or IOException) { last = e.Message; }
            await Task.Delay(50, ct);
        }
        var tail = File.Exists(log) ? string.Join('\n', File.ReadLines(log).TakeLast(15)) : "(no log)";
        throw new TimeoutException($"{what} did not come up within 30 s ({last}). Last lines of {log}:\n{tail}");
    }

    /// <summary>
    /// Removes every process, namespace, link and file of the lab. Safe to run twice or on a half-made lab.
    /// </summary>
    public async Task DownAsync(CancellationToken ct)
    {
        if (Directory.Exists(paths.RunDir))
        {
            // Supervisors first (stopping one stops its daemon), so none restarts a daemon being
            // stopped; then whatever daemon is still there (its supervisor was gone or gave up).
            var pidFiles = Directory.GetFiles(paths.RunDir, "*.pid");
            var supervisors = pidFiles
                .Where(f => f.EndsWith(LabPaths.SupervisorPidSuffix, StringComparison.Ordinal)).ToList();
            await StopDaemonsAsync(supervisors, ct);
            await StopDaemonsAsync(pidFiles.Except(supervisors).Where(File.Exists), ct);
        }

        // Capsules before hosts: a capsule's namespace holds one end of a veth whose other end is in a host.
        var owned = Netns.List().Where(paths.Owns).OrderBy(n => n.Contains("-c-") ? 0 : 1).ToList();
        foreach (var ns in owned)
        {
            Say($"removing {ns}");
            await Netns.KillAllAsync(ns);
            await Netns.DeleteAsync(ns);
        }
        foreach (var dir in new[] { paths.RunDir, paths.StateDir, paths.SpoolDir })
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        try
        {
            LabContext.Remove(paths);
        }
        catch (Cli.UserError e)
        {
            Say($"the lab's context stays in the client config: {e.Message}");
        }
    }

    /// <summary>Stops the daemons named by pid files: politely first (they tidy up), then by force.</summary>
    async Task StopDaemonsAsync(IEnumerable<string> pidFiles, CancellationToken ct)
    {
        var daemons = new List<int>();
        foreach (var f in pidFiles)
            if (File.Exists(f) && int.TryParse(File.ReadAllText(f).Trim(), out var pid) && IsOurs(pid))
                daemons.Add(pid);
        foreach (var pid in daemons) Native.kill(pid, 15);
        var sw = Stopwatch.StartNew();
        while (daemons.Any(CapsuleProcess.IsAlive) && sw.Elapsed < TimeSpan.FromSeconds(5)) await Task.Delay(20, ct);
        foreach (var pid in daemons) Native.kill(pid, 9);
    }

    bool IsOurs(int pid)
    {
        try
        {
            // An etcd member names its data folder (under the state folder), every other daemon the run folder.
            var cmdline = File.ReadAllText($"/proc/{pid}/cmdline");
            return cmdline.Contains(paths.RunDir, StringComparison.Ordinal)
                || cmdline.Contains(paths.StateDir + "/", StringComparison.Ordinal);
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }
}

/// <summary>The lab record's JSON, source-generated: the native (AOT) binary has no reflection serializer.</summary>
[JsonSerializable(typeof(LabRunner.Record))]
internal sealed partial class LabRecordJson : JsonSerializerContext;
