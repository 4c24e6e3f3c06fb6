using System.Text.Json;
using System.Text.Json.Serialization;
using Capsule.Core;

namespace Capsule.Agent;

/// <summary>What an agent keeps about a capsule it runs, also on disk so a restarted agent finds it again.</summary>
internal sealed record LocalCapsule(string Name, Locator Locator, string Netns, string Dir, int Pid, string[] Command,
    bool UdpDrop = false)
{
    public string StdoutPath => Path.Combine(Dir, "stdout.log");
    public string StderrPath => Path.Combine(Dir, "stderr.log");
    string File => Path.Combine(Dir, "capsule.json");

    internal sealed record Dto(string Name, string Locator, string Netns, int Pid, string[] Command, bool UdpDrop);

    public void Save()
    {
        var tmp = File + ".tmp";
        System.IO.File.WriteAllText(tmp,
            JsonSerializer.Serialize(new Dto(Name, Locator.ToString(), Netns, Pid, Command, UdpDrop),
                LocalCapsuleJson.Default.Dto));
        System.IO.File.Move(tmp, File, overwrite: true);
    }

    public static LocalCapsule? Load(string dir)
    {
        var f = Path.Combine(dir, "capsule.json");
        if (!System.IO.File.Exists(f)) return null;
        var d = JsonSerializer.Deserialize(System.IO.File.ReadAllText(f), LocalCapsuleJson.Default.Dto);
        return d is null ? null
            : new LocalCapsule(d.Name, Core.Locator.Parse(d.Locator), d.Netns, dir, d.Pid, d.Command, d.UdpDrop);
    }
}

/// <summary>Source-generated: the native (AOT) binary has no reflection-based serializer.</summary>
[JsonSerializable(typeof(LocalCapsule.Dto))]
internal sealed partial class LocalCapsuleJson : JsonSerializerContext;
