using System.Text.Json;
using System.Text.Json.Serialization;
using Capsule.Core;

namespace Capsule.Agent.Migration;

/// <summary>How far a move has come, as written down before each step that cannot be taken back.</summary>
internal enum MoveStep
{
    /// <summary>Peers hold; the tree still runs here. Undo: release the holds here.</summary>
    Syncing,
    /// <summary>Dumped; the tree is stopped (or gone) here. Finish if the target runs it, else resume here.</summary>
    Frozen,
    /// <summary>The directory names the new home. Only tidying is left: flush the holds there, evict here.</summary>
    Switched,
}

/// <summary>What kind of move: to another host, or into a file.</summary>
internal enum MoveKind { Migrate, Suspend }

/// <summary>One unfinished move, as the source recorded it.</summary>
internal sealed record MoveRecord(
    MoveKind Kind,
    string Name,
    Locator Locator,
    string Target,
    MoveStep Step,
    Locator[] Holders,
    string Images,
    int Pid);

/// <summary>
/// The source's durable record of moves in progress (one small file per capsule, written with
/// fsync and rename), so that an agent that crashes and restarts finds every unfinished move and
/// finishes it or rolls it back (<see cref="MigrationRecovery"/>): the capsule ends running on
/// exactly one host and every hold is released.
/// </summary>
internal sealed class MigrationJournal(AgentOptions options)
{
    string Folder => Path.Combine(options.StateDir, "journal");
    string FileOf(string name) => Path.Combine(Folder, name + ".json");

    public void Write(MoveRecord record)
    {
        Directory.CreateDirectory(Folder);
        var file = FileOf(record.Name);
        var tmp = file + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(fs, record, MoveRecordJson.Default.MoveRecord);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, file, overwrite: true);
    }

    public void Remove(string name) => File.Delete(FileOf(name));

    public IReadOnlyList<MoveRecord> Pending()
    {
        if (!Directory.Exists(Folder)) return [];
        var list = new List<MoveRecord>();
        foreach (var f in Directory.EnumerateFiles(Folder, "*.json"))
        {
            var r = JsonSerializer.Deserialize(File.ReadAllText(f), MoveRecordJson.Default.MoveRecord);
            if (r is not null) list.Add(r);
        }
        return list;
    }

    internal sealed class LocatorConverter : JsonConverter<Locator>
    {
        public override Locator Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions o) =>
            Locator.Parse(reader.GetString()!);

        public override void Write(Utf8JsonWriter writer, Locator value, JsonSerializerOptions o) =>
            writer.WriteStringValue(value.ToString());
    }
}

/// <summary>
/// The journal's JSON (steps by name, locators as text), source-generated: the native (AOT) binary
/// has no reflection-based serializer.
/// </summary>
[JsonSourceGenerationOptions(UseStringEnumConverter = true, Converters = [typeof(MigrationJournal.LocatorConverter)])]
[JsonSerializable(typeof(MoveRecord))]
internal sealed partial class MoveRecordJson : JsonSerializerContext;
