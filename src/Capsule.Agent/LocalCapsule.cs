using System.Text.Json;
using System.Text.Json.Serialization;
using Capsule.Agent.Linux;
using Capsule.Core;

namespace Capsule.Agent;

/// <summary>What an agent keeps about a capsule it runs, also on disk so a restarted agent finds it again.</summary>
/// <param name="Root">Its own user and mount namespaces and root file system; null: it shares the host's.</param>
/// <param name="Limits">Its memory, CPU and process limits, in cgroups of its own; null: none.</param>
internal sealed record LocalCapsule(string Name, Locator Locator, string Netns, string Dir, int Pid, string[] Command,
    bool UdpDrop = false, OwnRoot? Root = null, CapsuleLimits? Limits = null)
{
    public string StdoutPath => Root is null ? Path.Combine(Dir, "stdout.log") : InUpper(OwnRoot.StdoutInside);
    public string StderrPath => Root is null ? Path.Combine(Dir, "stderr.log") : InUpper(OwnRoot.StderrInside);

    string InUpper(string inside) => Path.Combine(OwnRoot.Upper(Dir), inside.TrimStart('/'));

    // Beside the capsule's folder, not in it: the capsule writes in its folder (its working
    // directory), and the record names the process and namespace the agent kills and removes.
    // In the folder, it also travelled in every image, for the target to trust.
    string File => RecordOf(Dir);
    static string RecordOf(string dir) => Path.TrimEndingDirectorySeparator(dir) + ".json";
    /// <summary>Where an agent before this one kept the record (inside the folder): read once, then moved.</summary>
    static string OldRecordOf(string dir) => Path.Combine(dir, "capsule.json");

    internal sealed record Dto(string Name, string Locator, string Netns, int Pid, string[] Command, bool UdpDrop,
        OwnRoot? Root = null, CapsuleLimits? Limits = null);

    public void Save()
    {
        var tmp = File + ".tmp";
        System.IO.File.Delete(tmp);
        using (var fs = Rpc.PrivateFiles.CreateNew(tmp))
            JsonSerializer.Serialize(fs, new Dto(Name, Locator.ToString(), Netns, Pid, Command, UdpDrop, Root, Limits),
                LocalCapsuleJson.Default.Dto);
        System.IO.File.Move(tmp, File, overwrite: true);
    }

    /// <summary>The capsule's folder and its record, gone.</summary>
    public void Delete() => DeleteAt(Dir);

    public static void DeleteAt(string dir)
    {
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        System.IO.File.Delete(RecordOf(dir));
    }

    public static LocalCapsule? Load(string dir)
    {
        var f = RecordOf(dir);
        if (!System.IO.File.Exists(f) && System.IO.File.Exists(OldRecordOf(dir)))
            System.IO.File.Move(OldRecordOf(dir), f);
        if (!System.IO.File.Exists(f)) return null;
        var d = JsonSerializer.Deserialize(System.IO.File.ReadAllText(f), LocalCapsuleJson.Default.Dto);
        return d is null ? null
            : new LocalCapsule(d.Name, Core.Locator.Parse(d.Locator), d.Netns, dir, d.Pid, d.Command, d.UdpDrop,
                d.Root, d.Limits);
    }
}

/// <summary>Source-generated: the native (AOT) binary has no reflection-based serializer.</summary>
[JsonSerializable(typeof(LocalCapsule.Dto))]
internal sealed partial class LocalCapsuleJson : JsonSerializerContext;
