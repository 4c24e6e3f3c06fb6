using System.Text.Json.Serialization;

namespace Capsule.Lab;

// What the lab's commands (`capsule bench ...`, `capsule doctor`) print with --json, source-generated as the
// CLI's own (CliJson, in Capsule.Cli). Names follow the snake_case policy.

/// <summary>A move's phases as the benchmarks report them, with CRIU's own share of freeze+dump and restore.</summary>
/// <summary>
/// Frozen: from the dump's start until the capsule ran on the target; PostCopyTail: from then until its last page came.
/// </summary>
internal sealed record BenchPhasesJson(long Sync, long FreezeDump, long Transfer, long Restore, long Flush,
    long Total, long CriuDump, long CriuRestore, long Frozen, long PostCopyTail)
{
    public static BenchPhasesJson Of(Protos.PhaseTimes t) => new(t.SyncMs, t.DumpMs, t.TransferMs, t.RestoreMs,
        t.FlushMs, t.TotalMs, t.CriuDumpMs, t.CriuRestoreMs, t.FreezeMs, t.PostCopyTailMs);
}

/// <summary>
/// CapsuleOverlay: the default data plane (AES-GCM, Lanes lanes: one per core); CapsuleOverlayOneLane: the same on one
/// lane; AuthenticateOnly: payloads left plain (GMAC). WireguardGo:
/// null when no wireguard-go binary was found, and WireguardGoSkipped then says why.
/// </summary>
internal sealed record DataplaneJson(int Seconds, Bench.DataplaneBench.Measurement Underlay,
    Bench.DataplaneBench.Measurement KernelVxlan, Bench.DataplaneBench.Measurement CapsuleOverlay,
    OverlayRatios OverlayVsVxlan, Bench.DataplaneBench.Measurement AuthenticateOnly,
    OverlayRatios AuthenticateOnlyVsVxlan, Bench.DataplaneBench.Measurement? WireguardGo,
    OverlayRatios? WireguardGoVsVxlan, string? WireguardGoVersion, string? WireguardGoSkipped,
    Bench.DataplaneBench.Measurement CapsuleOverlayNoOffloads, OverlayRatios NoOffloadsVsVxlan,
    double? OverlayVsWireguardGo, int Lanes, Bench.DataplaneBench.Measurement CapsuleOverlayOneLane,
    OverlayRatios OneLaneVsVxlan);

/// <summary>Against kernel VXLAN: single-stream TCP, median RTT, and TCP with four streams.</summary>
internal sealed record OverlayRatios(double Throughput, double Rtt, double FourStreamsThroughput);

/// <summary>Apps: the application rows (redis, a JVM); null with --no-apps.</summary>
internal sealed record MigrateBenchJson(int Seconds, bool Warmup, int BallastMb, List<Bench.MigrateBench.Row> Modes,
    long? CriuFloorMs, string CriuFloorNote, Dictionary<string, double?> StallOverFloor, MigrateBenchGoal Goal,
    List<Bench.MigrateBench.AppRow>? Apps);

internal sealed record MigrateBenchGoal(double StallOverFloorAtMost, int PeerRtos, int RedisWorstWaitMsAtMost);

internal sealed record DirectoryBenchJson(int Watchers, int Capsules, int Changes, List<Bench.DirectoryRow> Rows);

internal sealed record DrainBenchJson(int BallastMb, List<Bench.DrainRow> Rows);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(List<Doctor.Check>))]
[JsonSerializable(typeof(DataplaneJson))]
[JsonSerializable(typeof(MigrateBenchJson))]
[JsonSerializable(typeof(Bench.SoakBench.SoakReport))]
[JsonSerializable(typeof(CliBenchJson))]
[JsonSerializable(typeof(DirectoryBenchJson))]
[JsonSerializable(typeof(DrainBenchJson))]
internal sealed partial class LabJson : JsonSerializerContext;
