using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// CRIU's record of a host's CPU (`criu cpuinfo dump`: its features, as the restored programs may have found them
/// and chosen code paths by them), and the check that another host's CPU has what that record says
/// (`criu cpuinfo check`): a capsule restored on a CPU without them could fault on its first such instruction.
/// </summary>
public sealed partial class Criu
{
    const string CpuInfoImage = "cpuinfo.img";
    byte[]? _cpuInfo;

    /// <summary>This host's CPU as CRIU records it; dumped once per agent (the CPU does not change under it).</summary>
    public async Task<byte[]> CpuInfoAsync(string scratchDir, CancellationToken ct)
    {
        if (_cpuInfo is not null) return _cpuInfo;
        var dir = ScratchFolder(scratchDir);
        try
        {
            var r = await Cmd.TryRunAsync(binary, ["cpuinfo", "dump", "-D", dir], ct);
            if (!r.Ok) throw new InvalidOperationException($"`criu cpuinfo dump` failed: {Tail(r.Stderr + r.Stdout)}");
            _cpuInfo = await File.ReadAllBytesAsync(Path.Combine(dir, CpuInfoImage), ct);
            return _cpuInfo;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Null when this host's CPU has what <paramref name="image"/> (another host's record) says; else why not.
    /// </summary>
    public async Task<string?> CpuInfoProblemAsync(byte[] image, string scratchDir, CancellationToken ct)
    {
        var dir = ScratchFolder(scratchDir);
        try
        {
            await File.WriteAllBytesAsync(Path.Combine(dir, CpuInfoImage), image, ct);
            var r = await Cmd.TryRunAsync(binary, ["cpuinfo", "check", "-D", dir, "-o", "check.log", "-v2"], ct);
            if (r.Ok) return null;
            return $"its CPU lacks features the source's has (criu cpuinfo check: {LogTail(dir, "check.log")})";
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    static string ScratchFolder(string parent) =>
        Directory.CreateDirectory(Path.Combine(parent, "cpuinfo-" + Guid.NewGuid().ToString("n"))).FullName;
}
