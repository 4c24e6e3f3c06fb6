using System.Text.Json;
using System.Text.Json.Serialization;

namespace Capsule.Cli;

/// <summary>
/// One named way to reach a Capsule cluster, as a kubeconfig context is: where its directory answers
/// (<c>etcd:HOST:2379,...</c>, <c>http://HOST:7472</c> or <c>unix:PATH</c>), and how to reach agents whose
/// advertised endpoint this machine cannot reach, and the operator's certificate for https:// endpoints.
/// </summary>
public sealed record ClientContext(string Name, string Directory)
{
    /// <summary>The cluster CA's certificate (ca.crt): the only issuer trusted for servers' certificates.</summary>
    public string? Ca { get; init; }

    /// <summary>The operator's certificate (`capsule operator add`), shown to https:// servers.</summary>
    public string? Cert { get; init; }

    /// <summary>The operator's private key (mode 0600).</summary>
    public string? Key { get; init; }

    /// <summary>Agents reached at another endpoint than the one they advertise, by host name.</summary>
    public Dictionary<string, string> Agents { get; init; } = [];

    /// <summary>
    /// A folder of unix sockets named HOST.sock (a lab's control sockets, or sockets forwarded over SSH):
    /// an agent whose socket is there is reached through it.
    /// </summary>
    public string? AgentSockets { get; init; }

    /// <summary>Written by `capsule lab up` for the lab of this name; `lab down` removes it.</summary>
    public bool Lab { get; init; }

    /// <summary>
    /// Where this context reaches <paramref name="host"/>'s agent, which advertised <paramref name="advertised"/>.
    /// </summary>
    public string AgentEndpoint(string host, string advertised)
    {
        if (Agents.TryGetValue(host, out var e)) return e;
        var socket = AgentSockets is { } dir ? Path.Combine(dir, host + ".sock") : null;
        return socket is not null && File.Exists(socket) ? "unix:" + socket : advertised;
    }
}

/// <summary>The client config file: every context this CLI knows, and which one it uses by default.</summary>
public sealed class ClientConfigFile
{
    public string? Current { get; set; }
    public List<ClientContext> Contexts { get; init; } = [];

    public ClientContext? Find(string name) => Contexts.Find(c => c.Name == name);

    /// <summary>Adds <paramref name="context"/>, or replaces the one of its name.</summary>
    public void Put(ClientContext context)
    {
        Contexts.RemoveAll(c => c.Name == context.Name);
        Contexts.Add(context);
        Contexts.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingDefault)]
[JsonSerializable(typeof(ClientConfigFile))]
internal sealed partial class ClientConfigJson : JsonSerializerContext;

/// <summary>
/// Reads and changes the client config file: <c>$CAPSULE_CLIENT_CONFIG</c>, else
/// <c>$XDG_CONFIG_HOME/capsule/config.json</c> (<c>~/.config/capsule/config.json</c>). Changes hold an
/// exclusive lock and replace the file atomically, so labs coming up side by side never lose each other's
/// context; a file that does not parse is reported and never overwritten.
/// </summary>
public static class ClientConfig
{
    public const string PathVariable = "CAPSULE_CLIENT_CONFIG";

    public static string FilePath =>
        Environment.GetEnvironmentVariable(PathVariable) is { Length: > 0 } p ? Path.GetFullPath(p)
        // DoNotVerify: the default answers "" for a folder that does not exist yet (a fresh home's ~/.config).
        : Environment.GetFolderPath(Environment.SpecialFolder.ApplicationData,
            Environment.SpecialFolderOption.DoNotVerify) is { Length: > 0 } d
            ? Path.Combine(d, "capsule", "config.json")
        : throw new UserError($"no home folder to keep the client config in; set {PathVariable}=FILE");

    public static ClientConfigFile Read() => Read(FilePath);

    static ClientConfigFile Read(string path)
    {
        if (!File.Exists(path)) return new ClientConfigFile();
        try
        {
            using var f = File.OpenRead(path);
            return JsonSerializer.Deserialize(f, ClientConfigJson.Default.ClientConfigFile) ?? new ClientConfigFile();
        }
        catch (JsonException e)
        {
            throw new UserError($"{path} is not a Capsule client config ({e.Message}); fix it, or move it away " +
                "and let `capsule context set` or `capsule lab up` write a new one");
        }
    }

    /// <summary>Applies <paramref name="change"/> to the file under an exclusive lock.</summary>
    public static T Update<T>(Func<ClientConfigFile, T> change)
    {
        var path = FilePath;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var held = Lock(path + ".lock");
        var config = Read(path);
        var result = change(config);
        var temp = $"{path}.{Environment.ProcessId}.tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(config, ClientConfigJson.Default.ClientConfigFile));
        File.Move(temp, path, overwrite: true);
        return result;
    }

    /// <summary>
    /// An exclusive lock on <paramref name="path"/>: .NET takes flock(2) for FileShare.None on Linux, which
    /// another process's attempt fails fast on, so this retries for a while.
    /// </summary>
    static FileStream Lock(string path)
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < until)
            {
                Thread.Sleep(10);
            }
            catch (IOException e)
            {
                throw new UserError($"could not lock {path} within 10 s ({e.Message}); is another capsule " +
                    "command stuck changing the client config?");
            }
        }
    }

    /// <summary>Why <paramref name="name"/> cannot name a context, or null when it can.</summary>
    public static string? NameError(string name) =>
        name.Length is >= 1 and <= 63 && char.IsAsciiLetterOrDigit(name[0])
            && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')
            ? null
            : $"context name '{name}' must be 1-63 characters of letters, digits, '-', '_' and '.', " +
              "starting with a letter or digit";

    /// <summary>Why <paramref name="endpoint"/> is no directory or agent endpoint, or null when it is one.</summary>
    public static string? EndpointError(string endpoint) =>
        endpoint.StartsWith("etcd:", StringComparison.Ordinal) && endpoint.Length > 5 ? null
        : endpoint.StartsWith("unix:/", StringComparison.Ordinal) ? null
        : Uri.TryCreate(endpoint, UriKind.Absolute, out var u) && u.Scheme is "http" or "https" && u.Port > 0
            ? null
        : $"'{endpoint}' is no endpoint: give etcd:HOST:PORT[,HOST:PORT...], http(s)://HOST:PORT or unix:/PATH";
}
