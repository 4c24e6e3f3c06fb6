using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Capsule.Core;
using Google.Protobuf;

namespace Capsule.Dir.Etcd;

/// <summary>
/// Where the directory lives in etcd: every key under one prefix (default <c>/capsule/</c>), so one
/// range read is a snapshot and one watch sees every change.
/// <list type="bullet">
/// <item><c>pool</c>: the locator pool, written once by <c>capsule directory init</c>.</item>
/// <item><c>hosts/NAME</c>, <c>capsules/NAME</c>: the records (JSON); a capsule's revision is its key's
/// mod revision, so a conditional update is an etcd compare on exactly that.</item>
/// <item><c>locators/ADDR</c>, <c>underlays/ADDR</c>: who holds an address. Created in the same
/// transaction as the record, conditioned on not existing: no two capsules ever get one locator,
/// no two hosts one underlay address, whoever wins a race.</item>
/// <item><c>alive/NAME</c>: bound to the host agent's lease; gone when the agent has been silent
/// longer than the lease (the host then shows as unreachable).</item>
/// </list>
/// </summary>
internal sealed class EtcdKeys(string prefix)
{
    public const string DefaultPrefix = "/capsule/";

    public string Prefix { get; } = prefix.EndsWith('/') ? prefix : prefix + "/";
    public ByteString All => Bytes(Prefix);
    public ByteString AllEnd => RangeEnd(Prefix);
    public ByteString Pool => Bytes(Prefix + "pool");
    public ByteString Host(string name) => Bytes(Prefix + "hosts/" + name);
    public ByteString Capsule(string name) => Bytes(Prefix + "capsules/" + name);
    public ByteString Locator(Locator l) => Bytes(Prefix + "locators/" + l);
    public ByteString Underlay(Locator l) => Bytes(Prefix + "underlays/" + l);
    public ByteString Alive(string name) => Bytes(Prefix + "alive/" + name);

    /// <summary>What a key under the prefix is: its kind ("hosts", "capsules", ...) and name.</summary>
    public (string Kind, string Name) Parse(ByteString key)
    {
        var k = key.ToStringUtf8();
        if (!k.StartsWith(Prefix, StringComparison.Ordinal)) return ("", "");
        var rest = k.AsSpan(Prefix.Length);
        var slash = rest.IndexOf('/');
        return slash < 0 ? (rest.ToString(), "") : (rest[..slash].ToString(), rest[(slash + 1)..].ToString());
    }

    static ByteString Bytes(string s) => ByteString.CopyFromUtf8(s);

    /// <summary>The end of a prefix range: the prefix with its last byte plus one (etcd's convention).</summary>
    static ByteString RangeEnd(string prefix)
    {
        var b = Encoding.UTF8.GetBytes(prefix);
        b[^1]++;
        return ByteString.CopyFrom(b);
    }
}

/// <summary>A host record as stored in etcd.</summary>
internal sealed record EtcdHost(string Underlay, string Agent, string Serves, bool Cordoned = false);

/// <summary>A capsule record as stored in etcd (its revision is the key's mod revision).</summary>
internal sealed record EtcdCapsule(string Locator, string Host, CapsuleState State, string? Detail);

[JsonSourceGenerationOptions(UseStringEnumConverter = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(EtcdHost))]
[JsonSerializable(typeof(EtcdCapsule))]
internal sealed partial class EtcdJson : JsonSerializerContext
{
    public static ByteString Encode(HostRecord h) =>
        ByteString.CopyFrom(JsonSerializer.SerializeToUtf8Bytes(
            new EtcdHost(h.Underlay.ToString(), h.AgentEndpoint, h.Serves, h.Cordoned), Default.EtcdHost));

    public static ByteString Encode(CapsuleRecord c) =>
        ByteString.CopyFrom(JsonSerializer.SerializeToUtf8Bytes(
            new EtcdCapsule(c.Locator.ToString(), c.Host, c.State, c.Detail), Default.EtcdCapsule));

    public static HostRecord Host(string name, ByteString value)
    {
        var h = JsonSerializer.Deserialize(value.Span, Default.EtcdHost)
            ?? throw new DirectoryException($"host '{name}' has an empty record in etcd");
        return new HostRecord(name, Core.Locator.Parse(h.Underlay), h.Agent, h.Serves, h.Cordoned);
    }

    public static CapsuleRecord Capsule(string name, ByteString value, long revision)
    {
        var c = JsonSerializer.Deserialize(value.Span, Default.EtcdCapsule)
            ?? throw new DirectoryException($"capsule '{name}' has an empty record in etcd");
        return new CapsuleRecord(name, Core.Locator.Parse(c.Locator), c.Host, c.State, revision) { Detail = c.Detail };
    }
}
