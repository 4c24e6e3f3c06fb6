namespace Capsule.Agent.Linux;

/// <summary>Named network namespaces (/run/netns) and the sysctls the plumbing relies on.</summary>
public static partial class Netns
{
    public const string Dir = "/run/netns";

    public static bool Exists(string name) => File.Exists(Path.Combine(Dir, name));

    public static IEnumerable<string> List() =>
        Directory.Exists(Dir) ? Directory.EnumerateFiles(Dir).Select(Path.GetFileName).OfType<string>() : [];

    public static async Task AddAsync(string name)
    {
        if (!Exists(name)) await Cmd.Ip(null, "netns", "add", name);
        await Cmd.Ip(name, "link", "set", "lo", "up");
    }

    public static Task DeleteAsync(string name)
    {
        if (Exists(name)) Remove(name);
        return Task.CompletedTask;
    }

    /// <summary>Sets a sysctl inside a namespace; /proc/sys/net is per network namespace.</summary>
    public static Task SysctlAsync(string? netns, string key, string value)
    {
        string[] args = ["-w", $"{key}={value}"];
        return netns is null
            ? Cmd.RunAsync("sysctl", args)
            : Cmd.RunAsync("ip", ["netns", "exec", netns, "sysctl", .. args]);
    }

    /// <summary>PIDs of processes whose network namespace is <paramref name="name"/>.</summary>
    public static Task<int[]> PidsAsync(string name) => Task.FromResult(Pids(name));

    /// <summary>Kills every process in the namespace: what the lab and `rm` use to leave nothing behind.</summary>
    public static async Task KillAllAsync(string name)
    {
        for (var round = 0; round < 50; round++)
        {
            var pids = await PidsAsync(name);
            if (pids.Length == 0) return;
            foreach (var pid in pids) Native.kill(pid, 9);
            await Task.Delay(20);
        }
    }
}
