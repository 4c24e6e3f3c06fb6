using System.Text.Json.Serialization;
using Capsule.Protos;
using Capsule.Rpc;

namespace Capsule.Cli;

// `capsule drain --json` and `capsule hosts --json`: their own source-generated context, beside CliJson.

/// <summary>One capsule of a drain; BytesPerSecond and LeftMs as the agent estimates them (-1: unknown).</summary>
internal sealed record DrainItemJson(string Capsule, string Target, string Phase, long Bytes, double BytesPerSecond,
    long ElapsedMs, long LeftMs, string? Error);

internal sealed record DrainJson(string Host, string State, bool Cordoned, int Parallel, int Moved, int Failed,
    long ElapsedMs, long LeftMs, List<DrainItemJson> Capsules)
{
    public static DrainJson Of(DrainReport r) => new(r.Host, EventNames.DrainState(r.State), r.Cordoned, r.Parallel,
        r.Moved, r.Failed, r.ElapsedMs, r.LeftMs, r.Items.Select(i => new DrainItemJson(i.Capsule, i.Target, i.Phase,
            i.Bytes, i.BytesPerSecond, i.ElapsedMs, i.LeftMs, i.Error.Length > 0 ? i.Error : null)).ToList());
}

internal sealed record HostRowJson(string Name, string Underlay, string Role, bool Cordoned, bool Unreachable,
    int Capsules);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(DrainJson))]
[JsonSerializable(typeof(List<HostRowJson>))]
internal sealed partial class DrainCliJson : JsonSerializerContext;
