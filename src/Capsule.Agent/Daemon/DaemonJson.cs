using System.Text.Json.Serialization;
using Capsule.Agent;
using Capsule.Dir;

namespace Capsule.Daemon;

/// <summary>
/// The daemons' settings as JSON (`--check`'s output, the lab's config files), source-generated: the
/// native binary has no reflection-based serializer. Key names as in the files (PascalCase).
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(AgentConfig))]
[JsonSerializable(typeof(DirectoryConfig))]
public sealed partial class DaemonJson : JsonSerializerContext;
