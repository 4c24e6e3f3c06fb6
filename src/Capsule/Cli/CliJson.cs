using System.Text.Json.Serialization;
using Capsule.Checkpoint;

namespace Capsule.Cli;

// What `--json` prints, as named shapes: the native (AOT) binary has no reflection-based serializer,
// so every shape is source-generated in CliJson below. Names follow the snake_case policy.

internal sealed record CreatedJson(string Name, string Locator, string Host, int Pid);

internal sealed record CapsuleRowJson(string Name, string Locator, string Host, string State, string? File,
    string? Detail);

internal sealed record StatsJson(string Host, int Capsules, int Routes, Dictionary<string, long> Counters,
    Dictionary<string, long> Drops);

internal sealed record PhasesJson(long Sync, long Dump, long Transfer, long Restore, long Flush, long Total);

/// <summary>A move's phases as the benchmarks report them, with CRIU's own share of freeze+dump and restore.</summary>
internal sealed record BenchPhasesJson(long Sync, long FreezeDump, long Transfer, long Restore, long Flush,
    long Total, long CriuDump, long CriuRestore)
{
    public static BenchPhasesJson Of(Protos.PhaseTimes t) => new(t.SyncMs, t.DumpMs, t.TransferMs, t.RestoreMs,
        t.FlushMs, t.TotalMs, t.CriuDumpMs, t.CriuRestoreMs);
}

internal sealed record MigrateJson(string Name, bool Ok, string? Error, bool ResumedOnSource, string Host, int Pid,
    PhasesJson PhasesMs, long ImageBytes, int Peers, long Held, long Flushed, long Dropped, long Unaccounted,
    long UdpBytesLostAtFreeze, int ClosingConnectionsLost);

internal sealed record SuspendPhasesJson(long Sync, long Dump, long Write, long Total);

internal sealed record SuspendJson(string Name, string File, long Bytes, int Processes, int Connections, int Peers,
    SuspendPhasesJson PhasesMs);

internal sealed record ResumeJson(string Name, string Locator, string Host, int Pid, long RestoreMs, long TotalMs,
    long Flushed, long Dropped, long Bytes);

internal sealed record InspectJson(SuspendMeta Meta, long Size, string Checksum);

internal sealed record DataplaneJson(int Seconds, Bench.DataplaneBench.Measurement Underlay,
    Bench.DataplaneBench.Measurement KernelVxlan, Bench.DataplaneBench.Measurement CapsuleOverlay,
    OverlayRatios OverlayVsVxlan);

internal sealed record OverlayRatios(double Throughput, double Rtt);

internal sealed record MigrateBenchJson(int Seconds, bool Warmup, int BallastMb, List<Bench.MigrateBench.Row> Modes,
    long? CriuFloorMs, string CriuFloorNote, Dictionary<string, double?> StallOverFloor, MigrateBenchGoal Goal);

internal sealed record MigrateBenchGoal(double StallOverFloorAtMost, int PeerRtos);

internal sealed record DirectoryBenchJson(int Watchers, int Capsules, int Changes, List<Bench.DirectoryRow> Rows);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(CreatedJson))]
[JsonSerializable(typeof(List<CapsuleRowJson>))]
[JsonSerializable(typeof(StatsJson))]
[JsonSerializable(typeof(MigrateJson))]
[JsonSerializable(typeof(SuspendJson))]
[JsonSerializable(typeof(ResumeJson))]
[JsonSerializable(typeof(InspectJson))]
[JsonSerializable(typeof(List<Doctor.Check>))]
[JsonSerializable(typeof(DataplaneJson))]
[JsonSerializable(typeof(MigrateBenchJson))]
[JsonSerializable(typeof(Bench.SoakBench.SoakReport))]
[JsonSerializable(typeof(CliBenchJson))]
[JsonSerializable(typeof(DirectoryBenchJson))]
internal sealed partial class CliJson : JsonSerializerContext;
