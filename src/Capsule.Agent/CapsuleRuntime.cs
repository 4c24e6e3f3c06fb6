using System.Collections.Concurrent;
using Capsule.Agent.Linux;
using Capsule.Core;
using Capsule.Dir;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent;

/// <summary>
/// The capsules on this host (seed Fig. 3): creating one takes a locator from the directory, builds
/// its namespaces and starts its first process; any failure on the way undoes what was done and
/// gives the locator back, so a failed create leaves nothing behind.
/// </summary>
internal sealed class CapsuleRuntime(AgentOptions options, IDirectory directory, ILogger<CapsuleRuntime> log)
{
    readonly ConcurrentDictionary<string, LocalCapsule> _capsules = new();
    // One create or remove at a time per host: plumbing steps of two capsules never interleave.
    readonly SemaphoreSlim _gate = new(1, 1);

    readonly ConcurrentDictionary<string, DateTime> _moving = new();

    public IReadOnlyCollection<LocalCapsule> All => (IReadOnlyCollection<LocalCapsule>)_capsules.Values;
    public AgentOptions Options => options;

    /// <summary>Marks a capsule as moving; false if it already is (one migration at a time per capsule).</summary>
    public bool TryBeginMove(string name) => _moving.TryAdd(name, DateTime.UtcNow);
    public void EndMove(string name) => _moving.TryRemove(name, out _);
    public bool IsMoving(string name) => _moving.ContainsKey(name);

    /// <summary>Takes over a capsule restored on this host by a migration.</summary>
    public void Adopt(LocalCapsule c)
    {
        c.Save();
        _capsules[c.Name] = c;
        WatchExit(c);
    }

    /// <summary>
    /// Forgets a capsule that moved away: its plumbing and files here go, its locator stays (it lives on elsewhere).
    /// </summary>
    public async Task EvictAsync(LocalCapsule c)
    {
        _capsules.TryRemove(c.Name, out _);
        await TearDownAsync(c);
        c.Delete();
    }

    /// <summary>Its processes, its network and, if it has its own, its root's mounts: gone.</summary>
    async Task TearDownAsync(LocalCapsule c)
    {
        await CapsuleProcess.KillAsync(c.Pid);
        await ReleaseAsync(c);
    }

    /// <summary>What the host holds for it besides its processes: its network, root mounts and cgroups.</summary>
    async Task ReleaseAsync(LocalCapsule c)
    {
        await CapsuleNetwork.DestroyAsync(c.Netns, c.Locator);
        if (c.Root is not null) await Launcher.UnmountAsync(RootMounts.Of(options.StateDir, c.Name));
        if (c.Limits is not null) await c.Limits.RemoveAsync(c.Netns);
    }
    public LocalCapsule? Find(string name) => _capsules.GetValueOrDefault(name);

    /// <summary>Picks up capsules a previous run of this agent started (they outlive it).</summary>
    public async Task RecoverAsync(CancellationToken ct)
    {
        var root = Path.Combine(options.StateDir, "capsules");
        if (!Directory.Exists(root))
        {
            await RemoveStrayNamespacesAsync();
            return;
        }
        var snapshot = await directory.SnapshotAsync(ct);
        foreach (var dir in Directory.EnumerateDirectories(root))
        {
            var c = LocalCapsule.Load(dir);
            if (c is null) continue;
            if (!snapshot.Capsules.TryGetValue(c.Name, out var rec) || rec.Host != options.Host)
            {
                log.LogWarning("capsule {Name} is no longer placed on this host; removing its leftovers", c.Name);
                await ReleaseAsync(c);
                LocalCapsule.DeleteAt(dir);
                continue;
            }
            var alive = CapsuleProcess.IsAlive(c.Pid);
            // The nft set was rebuilt empty at start-up; let the capsule send again.
            if (alive) await HostNetwork.AllowAsync(CapsuleNetwork.HostIf(c.Locator), c.Locator);
            else if (rec.State == CapsuleState.Running)
            {
                // The host went down under it (a reboot): say so; `capsule rm` clears it away.
                log.LogWarning("capsule {Name} did not survive the host's restart", c.Name);
                await RecordStoppedAsync(c.Name, "its host restarted", ct);
            }
            _capsules[c.Name] = c;
            // Only the agent restarted (it crashed, or its supervisor restarted it): the capsule ran on
            // and its end must still be noticed.
            if (alive) WatchExit(c);
            log.LogInformation("recovered capsule {Name} ({Locator}, pid {Pid})", c.Name, c.Locator, c.Pid);
        }
        await RemoveStrayNamespacesAsync();
    }

    /// <summary>
    /// A namespace built for a capsule that never arrived (this agent died while it was the target
    /// of a move) belongs to no capsule here: it goes, with its veth.
    /// </summary>
    async Task RemoveStrayNamespacesAsync()
    {
        var prefix = options.CapsuleNetns("");
        foreach (var ns in Netns.List().Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).ToList())
        {
            if (_capsules.ContainsKey(ns[prefix.Length..])) continue;
            log.LogWarning("removing namespace {Netns}: no capsule of this host owns it", ns);
            await Netns.KillAllAsync(ns);
            await Netns.DeleteAsync(ns);
        }
    }

    /// <param name="rootfs">Its own user and mount namespaces on an overlay of this folder (<see cref="OwnRoot"/>);
    /// null: it shares the host's.</param>
    /// <param name="limits">Its cgroup limits (only with <paramref name="rootfs"/>).</param>
    public async Task<LocalCapsule> CreateAsync(string name, IReadOnlyList<string> command, bool udpDrop,
        string? rootfs, CapsuleLimits? limits, CancellationToken ct)
    {
        if (command.Count == 0)
            throw new ArgumentException("a command to run is required (capsule create NAME --host HOST -- CMD...)");
        if (options.Serves.Length > 0)
            throw new ArgumentException($"{options.Host} is a gateway; capsules run on hosts");
        if (rootfs is not null) CheckRootfs(rootfs);
        // Only a container's first process waits (in the launcher) until it is in its cgroups: any other would
        // have started children outside them.
        if (limits is not null && rootfs is null)
            throw new ArgumentException("--memory, --cpus and --pids need --rootfs (a capsule with its own root)");
        limits?.Check();
        // Found now, not after the plumbing: a typo gets a plain answer instead of a capsule that stops at once.
        if (Resolve(command[0], rootfs ?? "/") is null)
            throw new ArgumentException($"command not found on host {options.Host}" +
                (rootfs is null or "/" ? "" : $" under {rootfs}") + $": {command[0]}");
        await _gate.WaitAsync(ct);
        try
        {
            var rec = await directory.AllocateAsync(name, options.Host, ct);
            var netns = options.CapsuleNetns(name);
            var dir = options.CapsuleDir(name);
            var root = rootfs is null ? null : OwnRoot.For(rootfs, rec.Locator);
            var mounts = RootMounts.Of(options.StateDir, name);
            CapsuleProcess.Started? started = null;
            try
            {
                Rpc.PrivateFiles.CreateFolder(dir);
                var c0 = new LocalCapsule(name, rec.Locator, netns, dir, 0, [.. command], udpDrop, root, limits);
                started = await StartAsync(c0, mounts, ct);
                var c = c0 with { Pid = started.Pid };
                c.Save();
                await directory.UpdateAsync(name, options.Host, CapsuleState.Running, expectRevision: rec.Revision,
                    ct: ct);
                _capsules[name] = c;
                WatchExit(c, started.Launcher);
                log.LogInformation("created capsule {Name} at {Locator}, pid {Pid}", name, rec.Locator, c.Pid);
                return c;
            }
            catch (Exception e)
            {
                log.LogWarning("create {Name} failed, undoing: {Error}", name, e.Message);
                if (started is not null) await CapsuleProcess.KillAsync(started.Pid);
                await CapsuleNetwork.DestroyAsync(netns, rec.Locator);
                if (root is not null) await Launcher.UnmountAsync(mounts);
                if (limits is not null) await limits.RemoveAsync(netns);
                try { LocalCapsule.DeleteAt(dir); } catch (IOException) { }
                await directory.ReleaseAsync(name, CancellationToken.None);
                throw;
            }
        }
        finally { _gate.Release(); }
    }

    /// <summary>Its network, then its first process: in the host's user namespace, or in its own.</summary>
    async Task<CapsuleProcess.Started> StartAsync(LocalCapsule c, RootMounts mounts, CancellationToken ct)
    {
        if (c.Root is null)
        {
            await CapsuleNetwork.CreateAsync(c.Netns, c.Locator, options.InnerMtu);
            return await CapsuleProcess.StartAsync(c.Netns, c.Name, c.StdoutPath, c.StderrPath, c.Command, ct);
        }
        // Its network namespace is its own user namespace's, so it exists only once its first process
        // does: the launcher holds that process until the network is built from outside.
        var upper = OwnRoot.Upper(c.Dir);
        var fresh = !Directory.Exists(upper);
        if (c.Root.Lower == "/" && fresh) HostSecrets.Seed(c.Root, upper);
        if (fresh) CapsuleNames.Seed(c.Root, upper, c.Name, c.Locator);
        await Launcher.MountAsync(c.Root, upper, mounts, ct);
        var masked = c.Root.Lower == "/" ? HostSecrets.Masked(options.StateDir) : [];
        return await Launcher.RunAsync(c.Root, mounts, c.Name, c.Command, masked,
            pid =>
            {
                c.Limits?.Apply(c.Netns, pid);
                return CapsuleNetwork.CreateAsync(c.Netns, c.Locator, options.InnerMtu, pid);
            }, ct);
    }

    static void CheckRootfs(string rootfs)
    {
        if (!Path.IsPathFullyQualified(rootfs))
            throw new ArgumentException($"--rootfs takes an absolute path (got '{rootfs}'); use / for the host's");
        if (!Directory.Exists(rootfs))
            throw new ArgumentException($"--rootfs {rootfs}: no such folder");
    }

    /// <summary>The program's path as the capsule will see it, looked up under its root.</summary>
    static string? Resolve(string program, string root)
    {
        string Under(string p) => root == "/" ? p : Path.Join(root, p);
        return program.Contains('/')
            ? (File.Exists(Under(program)) ? program : null)
            : (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin")
                .Split(':', StringSplitOptions.RemoveEmptyEntries)
                .Select(d => Path.Combine(d, program)).FirstOrDefault(p => File.Exists(Under(p)));
    }

    /// <summary>
    /// When the capsule's process tree ends by itself, the directory says so and its traffic stops routing.
    /// </summary>
    void WatchExit(LocalCapsule c, System.Diagnostics.Process? launcher = null) => _ = Task.Run(async () =>
    {
        if (launcher is not null) await launcher.WaitForExitAsync();
        else
        {
            // A restored tree is not our child (CRIU detached it), so it cannot be waited for; look.
            while (CapsuleProcess.IsAlive(c.Pid)) await Task.Delay(500);
        }
        // A tree that ended because it moved away is not "stopped".
        if (!IsMoving(c.Name) && _capsules.TryGetValue(c.Name, out var cur) && cur.Pid == c.Pid)
        {
            log.LogInformation("capsule {Name} stopped (its first process exited)", c.Name);
            try { await RecordStoppedAsync(c.Name, "first process exited", CancellationToken.None); }
            catch (DirectoryException e)
            {
                log.LogWarning("could not record stop of {Name}: {Error}", c.Name, e.Message);
            }
        }
        launcher?.Dispose();
    });

    /// <summary>
    /// Records that a capsule of this host stopped, at the revision just read. A conflict means another
    /// writer came in between (a migration's switch, say): read once more and retry, unless the capsule
    /// is no longer placed here, in which case it is not this host's to mark.
    /// </summary>
    public Task MarkStoppedAsync(string name, string why) => RecordStoppedAsync(name, why, CancellationToken.None);

    async Task RecordStoppedAsync(string name, string why, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            var rec = await directory.ReadAsync(name, ct);
            // Not this host's to mark; or marked already, and the first reason (the more telling one) stands.
            if (rec.Host != options.Host || rec.State == CapsuleState.Stopped) return;
            try
            {
                await directory.UpdateAsync(name, options.Host, CapsuleState.Stopped, rec.Revision, why, ct);
                return;
            }
            catch (DirectoryException e) when (e.Conflict && attempt == 0)
            {
                log.LogInformation("capsule {Name} changed while recording its stop; reading it again", name);
            }
        }
    }

    public async Task RemoveAsync(string name, CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            if (IsMoving(name))
                throw new InvalidOperationException(
                    $"capsule '{name}' is migrating; remove it when the migration has ended");
            if (!_capsules.TryRemove(name, out var c))
                throw new KeyNotFoundException($"capsule '{name}' is not on host {options.Host}");
            await TearDownAsync(c);
            c.Delete();
            await directory.ReleaseAsync(name, ct);
            log.LogInformation("removed capsule {Name}", name);
        }
        finally { _gate.Release(); }
    }
}
