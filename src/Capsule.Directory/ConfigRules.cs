using Capsule.Core;

namespace Capsule.Dir;

/// <summary>
/// Checks shared by the daemons' settings. Each message names the key and says what to write instead,
/// since the one reading it is an operator with a config file open, not a developer. In the directory, not
/// in Capsule.Hosting, because an endpoint to connect to may be the directory's etcd form (DirectoryClient).
/// </summary>
public static class ConfigRules
{
    public static readonly string[] LogLevels = ["Trace", "Debug", "Information", "Warning", "Error", "Critical"];

    /// <summary>An endpoint this daemon serves: unix:/path or http(s)://IPv4:port (Kestrel binds an address).</summary>
    public static void Serve(List<string> errors, string key, string? value, bool advertised)
    {
        if (string.IsNullOrEmpty(value))
        {
            errors.Add($"{key} is missing: write where to serve, unix:/path/to.sock or http://ADDRESS:PORT");
            return;
        }
        if (UnixPath(value, out var path))
        {
            if (!Path.IsPathFullyQualified(path))
                errors.Add($"{key}: '{value}' needs an absolute socket path, e.g. unix:/run/capsule/api.sock");
            return;
        }
        if (!Uri.TryCreate(value, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            || !Locator.TryParse(uri.Host, out var address) || uri.AbsolutePath != "/")
        {
            errors.Add($"{key}: '{value}' is not an endpoint to serve; write unix:/path/to.sock or " +
                "https://ADDRESS:PORT with an IPv4 address of this machine, e.g. https://10.0.0.5:7471");
            return;
        }
        if (advertised && address.IsNone)
            errors.Add($"{key}: '{value}' is advertised to the other hosts, and 0.0.0.0 reaches none of them; " +
                "write this host's own address (e.g. its underlay address)");
    }

    /// <summary>An endpoint this daemon connects to: unix:/path or http(s)://host:port.</summary>
    public static void Connect(List<string> errors, string key, string? value, string what)
    {
        if (string.IsNullOrEmpty(value))
        {
            errors.Add($"{key} is missing: write where {what} is, unix:/path/to.sock or http://HOST:PORT");
            return;
        }
        if (UnixPath(value, out var path))
        {
            if (!Path.IsPathFullyQualified(path))
                errors.Add($"{key}: '{value}' needs an absolute socket path, e.g. unix:/run/capsule/directory.sock");
            return;
        }
        if (DirectoryClient.IsEtcd(value))
        {
            // An etcd cluster: each member an endpoint of its own.
            var members = DirectoryClient.EtcdMembers(value);
            if (members.Length == 0)
                errors.Add($"{key}: '{value}' names no etcd member; " +
                    "write etcd:http://10.0.0.5:2379,http://10.0.0.6:2379");
            foreach (var m in members) Connect(errors, key, m, what);
            return;
        }
        if (!Uri.TryCreate(value, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) || uri.AbsolutePath != "/")
            errors.Add($"{key}: '{value}' is not an endpoint; write unix:/path/to.sock or http://HOST:PORT " +
                $"for {what}, e.g. http://10.0.0.5:7472");
    }

    /// <summary>
    /// The Tls section and the endpoint served over TCP agree: https:// with certificates, http:// without (the
    /// daemon then logs, once at start, that its control calls are unauthenticated).
    /// </summary>
    public static void Tls(List<string> errors, Capsule.Hosting.TlsConfig tls, string? listen)
    {
        tls.Validate(errors);
        var https = listen?.StartsWith("https:", StringComparison.Ordinal) == true;
        var http = listen?.StartsWith("http:", StringComparison.Ordinal) == true;
        if (https && tls.IsEmpty)
            errors.Add($"Listen: '{listen}' is https:// and there is no Tls section; add one (Ca, Cert, Key from " +
                "`capsule host add`), or serve http://");
        else if (http && !tls.IsEmpty)
            errors.Add($"Listen: '{listen}' is http:// yet a Tls section is given; write https:// so callers must " +
                "show a certificate");
    }

    /// <summary>A unix socket only (a control socket is for this machine's tools).</summary>
    public static void Socket(List<string> errors, string key, string? value)
    {
        if (string.IsNullOrEmpty(value)) return;
        if (!UnixPath(value, out var path) || !Path.IsPathFullyQualified(path))
            errors.Add($"{key}: '{value}' is not a unix socket endpoint; write unix:/absolute/path.sock or " +
                "leave it out");
    }

    public static void AbsolutePath(List<string> errors, string key, string? value, bool required)
    {
        if (string.IsNullOrEmpty(value))
        {
            if (required) errors.Add($"{key} is missing: write an absolute folder path");
            return;
        }
        if (!Path.IsPathFullyQualified(value))
            errors.Add($"{key}: '{value}' is a relative path; write an absolute one (a daemon's working folder is /)");
    }

    public static void LogLevel(List<string> errors, string value)
    {
        if (!LogLevels.Contains(value, StringComparer.OrdinalIgnoreCase))
            errors.Add($"LogLevel: '{value}' is not a log level; write one of {string.Join(", ", LogLevels)}");
    }

    public static Microsoft.Extensions.Logging.LogLevel ParseLogLevel(string value) =>
        Enum.Parse<Microsoft.Extensions.Logging.LogLevel>(value, ignoreCase: true);

    static bool UnixPath(string value, out string path)
    {
        path = value.StartsWith("unix:", StringComparison.Ordinal) ? value["unix:".Length..] : "";
        return value.StartsWith("unix:", StringComparison.Ordinal);
    }
}
