using System.Globalization;
using Capsule.Agent.Checkpoint;
using Capsule.Rpc;
using Capsule.Protos;
using Microsoft.Extensions.Logging;

namespace Capsule.Agent.Migration;

/// <summary>
/// Before a move freezes anything (issue 14, item 4): whether this host can run the capsule. Its CPU must have
/// what the source's had (CRIU's cpuinfo check), CRIU must find the kernel features it needs (`criu check`, in
/// <see cref="PrepareAsync"/>), and there must be room: memory available for the capsule's resident memory, and
/// free space where its image lands, less what every incoming image leaves free (<see cref="ImageBudget.Reserve"/>).
/// Every problem found is named, not only the first.
/// </summary>
internal sealed partial class MigrationTarget
{
    /// <summary>Throws, naming what this host lacks, if it cannot take the capsule of <paramref name="req"/>.</summary>
    public async Task CheckRoomAsync(PrepareRequest req, CancellationToken ct)
    {
        var folder = Path.Combine(O.StateDir, "migrations");
        PrivateFiles.CreateFolder(folder);
        await criu.CheckAsync(ct);
        var problems = new List<string>();
        if (req.Cpuinfo.Length > 0 && await criu.CpuInfoProblemAsync(req.Cpuinfo.ToByteArray(), folder, ct) is { } cpu)
            problems.Add(cpu);
        var memory = AvailableMemory();
        if (req.RssBytes > memory)
            problems.Add($"it has {Mib(memory)} of memory available and the capsule uses {Mib(req.RssBytes)}");
        var disk = new DriveInfo(folder).AvailableFreeSpace - ImageBudget.Reserve;
        if (req.ImageBytes > disk)
            problems.Add($"{folder} has {Mib(Math.Max(disk, 0))} free (beyond the {Mib(ImageBudget.Reserve)} kept " +
                $"free) and the capsule's image needs about {Mib(req.ImageBytes)}");
        if (problems.Count == 0) return;
        LogRefused(log, req.Name, string.Join("; ", problems));
        throw new InvalidOperationException(string.Join("; ", problems));
    }

    /// <summary>MemAvailable: what the kernel can give without swapping (free, and caches it can drop).</summary>
    static long AvailableMemory()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
            if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                return long.Parse(line.AsSpan(13).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture) * 1024;
        return long.MaxValue; // a kernel older than 3.14: nothing to judge by
    }

    static string Mib(long bytes) => $"{bytes / (1024.0 * 1024):F1} MiB";

    [LoggerMessage(EventId = 365, Level = LogLevel.Warning,
        Message = "refusing to take capsule {Name}: {Problems}")]
    static partial void LogRefused(ILogger logger, string name, string problems);
}
