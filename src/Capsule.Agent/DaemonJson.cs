using System.Text.Json.Serialization;
using Capsule.Dir;

namespace Capsule.Agent;

/// <summary>
/// The daemons' settings as JSON (`--check`'s output, the lab's config files), source-generated: the
/// native binary has no reflection-based serializer. Key names as in the files (PascalCase). In the agent
/// because it is the lowest assembly that sees both settings types (DirectoryConfig is the directory's).
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(AgentConfig))]
[JsonSerializable(typeof(DirectoryConfig))]
public sealed partial class DaemonJson : JsonSerializerContext;
