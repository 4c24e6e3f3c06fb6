using Capsule.Dir.Etcd;

namespace Capsule.Dir;

/// <summary>
/// Opens the directory an endpoint names: <c>etcd:ENDPOINT[,ENDPOINT...]</c> is an etcd cluster
/// (each member <c>http://addr:port</c> or <c>unix:/path</c>); anything else is an embedded
/// directory served over gRPC (<c>unix:/path</c> or <c>http://addr:port</c>).
/// </summary>
public static class DirectoryClient
{
    public const string EtcdScheme = "etcd:";

    public static IDirectory Open(string endpoint) =>
        IsEtcd(endpoint) ? new EtcdDirectory(EtcdMembers(endpoint)) : new RemoteDirectory(endpoint);

    public static bool IsEtcd(string endpoint) => endpoint.StartsWith(EtcdScheme, StringComparison.Ordinal);

    public static string[] EtcdMembers(string endpoint) => SplitMembers(endpoint[EtcdScheme.Length..]);

    /// <summary>The members of a comma-separated list (an endpoint's tail, or `--etcd`), blanks dropped.</summary>
    public static string[] SplitMembers(string list) =>
        list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public static string Etcd(IEnumerable<string> members) => EtcdScheme + string.Join(',', members);
}
