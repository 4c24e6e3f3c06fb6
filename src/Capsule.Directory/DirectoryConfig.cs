using Capsule.Core;
using Capsule.Hosting;

namespace Capsule.Dir;

/// <summary>
/// The directory's settings: `capsule directory --config /etc/capsule/directory.json`. One JSON object whose
/// keys are these properties (case does not matter); each can also be set by an environment variable
/// CAPSULE_DIRECTORY__KEY and most by a command-line option, which override the file in that order.
/// docs/config.md lists every key with an example file (deploy/directory.json).
/// </summary>
public sealed class DirectoryConfig : IDaemonConfig
{
    public const string EnvironmentPrefix = "CAPSULE_DIRECTORY__";

    /// <summary>The directory's usual TCP port.</summary>
    public const int DefaultPort = 7472;

    /// <summary>
    /// Folder holding the directory's durable state (one JSON file, replaced atomically on every change).
    /// Keep it across reboots: it is which capsule runs where. Default /var/lib/capsule/directory. Option --state.
    /// </summary>
    public string State { get; set; } = "/var/lib/capsule/directory";

    /// <summary>
    /// Required. Where to serve the directory's gRPC API, which every agent's Directory names:
    /// https://ADDRESS:7472 on the hosts' network (0.0.0.0 for every address), or unix:/path for one machine.
    /// https:// needs the <see cref="Tls"/> section; http:// (no Tls) is unauthenticated: a trusted network only.
    /// Option --listen.
    /// </summary>
    public string? Listen { get; set; }

    /// <summary>
    /// The directory's certificates: Ca (the cluster CA's ca.crt), Cert and Key (`capsule host add NAME --address
    /// IP --directory`). With them Listen is https:// and only callers with a certificate of the cluster CA get in.
    /// </summary>
    public TlsConfig Tls { get; set; } = new();

    /// <summary>Also serve on this unix socket (unix:/path), for tools on this machine. Default: none.</summary>
    public string? ControlSocket { get; set; }

    /// <summary>
    /// The locator pool: the IPv4 prefix capsule addresses are taken from (length 8-30). Fixed once capsules
    /// exist: the state refuses another. Default 100.64.0.0/16. Option --pool.
    /// </summary>
    public string Pool { get; set; } = "100.64.0.0/16";

    /// <summary>Write the process id to this file while the directory runs. Default: none. Option --pid-file.</summary>
    public string? PidFile { get; set; }

    /// <summary>
    /// The least severe messages logged: Trace, Debug, Information, Warning, Error or Critical.
    /// Default Information.
    /// </summary>
    public string LogLevel { get; set; } = "Information";

    public void Complete() { }

    public void Validate(List<string> errors, List<string> warnings)
    {
        ConfigRules.AbsolutePath(errors, "State", State, required: true);
        ConfigRules.Serve(errors, "Listen", Listen, advertised: false);
        ConfigRules.Tls(errors, Tls, Listen);
        ConfigRules.Socket(errors, "ControlSocket", ControlSocket);
        if (!Prefix.TryParse(Pool, out _))
            errors.Add($"Pool: '{Pool}' is not an IPv4 prefix; write one such as 100.64.0.0/16 (length 8-30)");
        ConfigRules.AbsolutePath(errors, "PidFile", PidFile, required: false);
        ConfigRules.LogLevel(errors, LogLevel);
    }

    /// <summary>Every endpoint served: <see cref="Listen"/>, then the control socket when there is one.</summary>
    public IReadOnlyList<string> Endpoints() =>
        string.IsNullOrEmpty(ControlSocket) ? [Listen!] : [Listen!, ControlSocket];
}
