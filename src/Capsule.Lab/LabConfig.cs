using System.Text.Json;
using Capsule.Agent;
using Capsule.Hosting;

namespace Capsule.Lab;

/// <summary>
/// Writes a simulated host's config file through the daemon's own settings type, every key spelled out, so the
/// lab starts its daemons from the same kind of file an operator writes (docs/config.md).
/// </summary>
internal static class LabConfig
{
    public static void Write(string file, IDaemonConfig settings)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        var tmp = file + ".tmp";
        File.WriteAllText(tmp, JsonSerializer.Serialize(settings, settings.GetType(), DaemonJson.Default));
        File.Move(tmp, file, overwrite: true);
    }
}
