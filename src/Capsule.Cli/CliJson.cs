using System.Text.Json.Serialization;
using Capsule.Rpc;

namespace Capsule.Cli;

// What `--json` prints, as named shapes: the native (AOT) binary has no reflection-based serializer,
// so every shape is source-generated in CliJson below. Names follow the snake_case policy.

internal sealed record CreatedJson(string Name, string Locator, string Host, int Pid);

internal sealed record RootJson(string Lower, string Upper, uint IdBase, uint IdCount);

internal sealed record NamespaceJson(string Kind, ulong Inode, bool Own);

/// <summary>
/// `capsule inspect NAME --json`; <see cref="Root"/> is null for a capsule on the host's file system.
/// </summary>
internal sealed record CapsuleInspectJson(string Name, string Host, string Locator, string State, int Pid,
    string[] Command, RootJson? Root, List<NamespaceJson> Namespaces, string? CapBounding, LimitsJson? Limits);

internal sealed record LimitsJson(long MemoryBytes, uint CpuMillis, uint Pids, string[] Cgroups);

/// <summary>`capsule ls --json`; the last four only with `--wide`, from the capsule's agent.</summary>
internal sealed record CapsuleRowJson(string Name, string Locator, string Host, string State, string? File,
    string? Detail)
{
    public string? Users { get; init; }
    public string? Root { get; init; }
    public LimitsJson? Limits { get; init; }
    public string[]? OwnNamespaces { get; init; }
}

internal sealed record StatsJson(string Host, int Capsules, int Routes, Dictionary<string, long> Counters,
    Dictionary<string, long> Drops);

/// <summary>
/// Stage: sending the capsule's files ahead, while it ran. Freeze: from the dump's start until the capsule ran on the
/// target. PostCopyTail: from then until its last page came.
/// </summary>
internal sealed record PhasesJson(long Stage, long Sync, long Dump, long Transfer, long Restore, long Flush,
    long Total, long Freeze, long PostCopyTail);

internal sealed record MigrateJson(string Name, bool Ok, string? Error, bool ResumedOnSource, string Host, int Pid,
    string Memory, PhasesJson PhasesMs, long ImageBytes, long StagedBytes, long PostCopyBytes, int Peers, long Held,
    long Flushed, long Dropped, long Unaccounted, long UdpBytesLostAtFreeze, int ClosingConnectionsLost,
    long BandwidthBytesPerSecond, List<FlowJson> Flows);

/// <summary>One socket of a moved capsule: its peer and what the move did to it (proto FlowReport).</summary>
internal sealed record FlowJson(string Protocol, string Local, string Peer, string State, string Holder, long Held,
    long Flushed, long StallMs, bool Paused, bool Survived)
{
    public static FlowJson From(Protos.FlowReport f) =>
        new(f.Protocol, f.Local, f.Peer, f.State, f.Holder, f.Held, f.Flushed, f.StallMs, f.Paused, f.Survived);
}

internal sealed record SuspendPhasesJson(long Sync, long Dump, long Write, long Total);

internal sealed record SuspendJson(string Name, string File, long Bytes, int Processes, int Connections, int Peers,
    SuspendPhasesJson PhasesMs);

internal sealed record ResumeJson(string Name, string Locator, string Host, int Pid, long RestoreMs, long TotalMs,
    long Flushed, long Dropped, long Bytes);

internal sealed record InspectJson(SuspendMeta Meta, long Size, string Checksum, string Signer);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(CreatedJson))]
[JsonSerializable(typeof(CapsuleInspectJson))]
[JsonSerializable(typeof(List<CapsuleRowJson>))]
[JsonSerializable(typeof(StatsJson))]
[JsonSerializable(typeof(MigrateJson))]
[JsonSerializable(typeof(SuspendJson))]
[JsonSerializable(typeof(ResumeJson))]
[JsonSerializable(typeof(InspectJson))]
internal sealed partial class CliJson : JsonSerializerContext;
