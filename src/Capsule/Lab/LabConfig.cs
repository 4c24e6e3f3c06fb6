using System.Text.Json;

namespace Capsule.Lab;

/// <summary>
/// Writes a simulated host's config file through the daemon's own settings type, every key spelled out, so the
/// lab starts its daemons from the same kind of file an operator writes (docs/config.md).
/// </summary>
internal static class LabConfig
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static void Write<T>(string file, T settings)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        var tmp = file + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(settings, Indented));
        File.Move(tmp, file, overwrite: true);
    }
}
