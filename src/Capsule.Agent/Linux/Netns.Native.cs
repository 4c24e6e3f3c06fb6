using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// Named network namespaces made, entered and removed in-process, as `ip netns add|delete|pids` do
/// it, without starting `ip`: a namespace is made by one short-lived thread that unshares its own
/// network namespace and bind-mounts it at /run/netns/NAME. A thread, not the process: only that
/// thread changes namespace, and it ends right after, so no other code ever runs in the wrong one.
/// </summary>
public static partial class Netns
{
    static readonly object MountLock = new();
    static bool _mountShared;

    /// <summary>
    /// Makes namespace <paramref name="name"/> (or takes the one left by a crash), brings its loopback up,
    /// sets <paramref name="sysctls"/> in it (/proc/sys/net is per namespace), and returns a netlink socket
    /// that configures it. On failure nothing of a namespace made here is left.
    /// </summary>
    /// <param name="ofPid">Name the network namespace process <paramref name="ofPid"/> is in (`ip netns attach`)
    /// instead of making one: a capsule with its own user namespace made its own, which it owns.</param>
    internal static Netlink Create(string name, int ofPid, params (string Key, string Value)[] sysctls)
    {
        var path = Path.Combine(Dir, name);
        var made = false;
        // A name left by a crash would be another namespace than the process's: it goes.
        if (ofPid > 0) Remove(name);
        if (!Exists(name))
        {
            ShareMounts();
            // O_EXCL: two makers of one name do not both think they made it.
            using (new FileStream(path, FileMode.CreateNew, FileAccess.Write)) { }
            made = true;
        }
        try
        {
            return OnOwnThread(() =>
            {
                if (made && ofPid > 0)
                {
                    unsafe
                    {
                        if (Native.mount($"/proc/{ofPid}/ns/net", path, "none", Native.MS_BIND, null) != 0)
                            throw Native.Failed($"bind network namespace of {ofPid} at {path}", Native.Errno);
                    }
                    Join(path, name);
                }
                else if (made)
                {
                    if (Native.unshare(Native.CLONE_NEWNET) != 0)
                        throw Native.Failed($"new network namespace {name}", Native.Errno);
                    const string self = "/proc/thread-self/ns/net";
                    unsafe
                    {
                        if (Native.mount(self, path, "none", Native.MS_BIND, null) != 0)
                            throw Native.Failed($"bind network namespace {name} at {path}", Native.Errno);
                    }
                }
                else Join(path, name);
                foreach (var (key, value) in sysctls)
                    WriteSysctl(key, value, name);
                var nl = Netlink.Open("netns " + name);
                try { Rtnl.SetUp(nl, "lo"); }
                catch
                {
                    nl.Dispose();
                    throw;
                }
                return nl;
            });
        }
        catch when (made)
        {
            Remove(name);
            throw;
        }
    }

    /// <summary>`ip netns delete NAME`: the name goes; the namespace ends once nothing uses it.</summary>
    public static void Remove(string name)
    {
        var path = Path.Combine(Dir, name);
        Native.umount2(path, Native.MNT_DETACH); // not mounted (a half-made one): nothing to undo
        try { File.Delete(path); }
        catch (IOException) { }
    }

    /// <summary>`ip netns pids NAME`: the processes in it, found by the namespace's inode.</summary>
    public static int[] Pids(string name)
    {
        var inode = Native.Inode(Path.Combine(Dir, name));
        if (inode == 0) return [];
        var want = $"net:[{inode}]";
        var pids = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid)) continue;
            try
            {
                // The link's own text ("net:[INODE]"), which is not a path to resolve.
                if (new FileInfo(Path.Combine(dir, "ns", "net")).LinkTarget == want) pids.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // it ended meanwhile
        }
        return [.. pids];
    }

    /// <summary>Writes /proc/sys/KEY (dots become slashes) in the calling thread's network namespace.</summary>
    public static void WriteSysctl(string key, string value, string where = "host")
    {
        var file = "/proc/sys/" + key.Replace('.', '/');
        try { File.WriteAllText(file, value); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CommandFailedException($"sysctl {key}={value} ({where}) failed: {e.Message}");
        }
    }

    static void Join(string path, string name)
    {
        var fd = Native.open(path, Native.O_RDONLY | Native.O_CLOEXEC);
        if (fd < 0) throw Native.Failed($"open network namespace {name}", Native.Errno);
        try
        {
            if (Native.setns(fd, Native.CLONE_NEWNET) != 0)
                throw Native.Failed($"enter network namespace {name}", Native.Errno);
        }
        finally { Native.close(fd); }
    }

    /// <summary>
    /// As `ip netns add` does: /run/netns becomes a shared mount, so a namespace named here (say, in an
    /// agent's own mount namespace) is seen under the same name by every mount namespace that shares it.
    /// </summary>
    static unsafe void ShareMounts()
    {
        lock (MountLock)
        {
            if (_mountShared) return;
            Directory.CreateDirectory(Dir);
            var bound = false;
            while (Native.mount("", Dir, "none", Native.MS_SHARED | Native.MS_REC, null) != 0)
            {
                // Not a mount point yet: bind it onto itself once, then share it.
                if (Native.Errno != Native.EINVAL || bound)
                    throw Native.Failed($"share mounts under {Dir}", Native.Errno);
                if (Native.mount(Dir, Dir, "none", Native.MS_BIND | Native.MS_REC, null) != 0)
                    throw Native.Failed($"bind {Dir} onto itself", Native.Errno);
                bound = true;
            }
            _mountShared = true;
        }
    }

    /// <summary>Runs <paramref name="f"/> on a thread of its own that ends with it (and its namespace).</summary>
    static T OnOwnThread<T>(Func<T> f)
    {
        T result = default!;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { result = f(); }
            catch (Exception e) { error = e; }
        }) { IsBackground = true, Name = "netns" };
        t.Start();
        t.Join();
        if (error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(error).Throw();
        return result;
    }
}
