using System.CommandLine;
using System.Net;
using System.Net.Sockets;
using Capsule.Trust;

namespace Capsule.Cli;

/// <summary>
/// `capsule cluster init`, `capsule host add`, `capsule operator add`: the cluster's certificate authority and the
/// certificates it issues (Capsule.Trust). Run them on an operator's machine that keeps the CA's folder; copy each
/// host's folder to that host. Private keys are written 0600 and never printed.
/// </summary>
public static class TrustCommands
{
    /// <summary>The CA's folder when --dir is not given: $CAPSULE_CA_DIR, else ./capsule-ca.</summary>
    static string DefaultDir =>
        Environment.GetEnvironmentVariable("CAPSULE_CA_DIR") is { Length: > 0 } d ? d : "capsule-ca";

    static Option<string> DirOption() => new("--dir")
    {
        Description = "The CA's folder (ca.crt, ca.key, hosts/, operators/); default $CAPSULE_CA_DIR or ./capsule-ca",
        DefaultValueFactory = _ => DefaultDir,
    };

    public static IEnumerable<Command> Build()
    {
        var cluster = new Command("cluster", "The cluster's certificate authority");
        cluster.Subcommands.Add(Init());
        yield return cluster;
        var host = new Command("host", "Hosts' certificates, issued by the cluster CA");
        host.Subcommands.Add(AddHost());
        yield return host;
        var op = new Command("operator", "Operators' client certificates, issued by the cluster CA");
        op.Subcommands.Add(AddOperator());
        yield return op;
    }

    static Command Init()
    {
        var dir = DirOption();
        var cmd = new Command("init", "Create the cluster CA (an ECDSA P-256 key and a self-signed certificate)")
            { dir };
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            using var ca = Wrap(() => ClusterCa.Create(pr.GetValue(dir)!));
            var folder = Path.GetFullPath(ca.Folder);
            Console.WriteLine($"cluster CA created in {folder}: {ClusterCa.CaCertFile} (give it to every host and " +
                $"operator), {ClusterCa.CaKeyFile} (private, mode 0600: keep it on this machine only)");
            return Task.FromResult(0);
        }));
        return cmd;
    }

    static Command AddHost()
    {
        var name = new Argument<string>("name") { Description = "The host's name, as its agent's Host key" };
        var address = new Option<string>("--address")
            { Description = "The host's underlay IP address (where the others reach it)", Required = true };
        var directory = new Option<bool>("--directory")
            { Description = "A certificate for the directory daemon rather than a host's agent" };
        var dir = DirOption();
        var cmd = new Command("add", "Issue a host's certificate, bound to its name and underlay address")
            { name, address, directory, dir };
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            var ip = pr.GetValue(address)!;
            if (!IPAddress.TryParse(ip, out var parsed) || parsed.AddressFamily != AddressFamily.InterNetwork
                || ip.Count(c => c == '.') != 3)
                throw new UserError($"--address '{ip}' is not an IPv4 address; write the host's underlay address, " +
                    "e.g. 10.0.0.5");
            var kind = pr.GetValue(directory) ? PeerKind.Directory : PeerKind.Host;
            using var ca = Wrap(() => ClusterCa.Open(pr.GetValue(dir)!));
            var files = Wrap(() => ca.IssueHost(pr.GetValue(name)!, parsed, kind));
            var config = kind == PeerKind.Host ? "/etc/capsule/agent.json" : "/etc/capsule/directory.json";
            Console.WriteLine($"{PeerIdentity.RoleName(kind)} {pr.GetValue(name)} ({ip}): files in " +
                $"{Path.GetFullPath(files.Folder)}; copy them to the host (the key stays mode 0600) and point " +
                $"{config}'s \"Tls\" keys at them:");
            Console.WriteLine($"  Tls.Ca   = {Path.GetFileName(files.Ca)}\n" +
                $"  Tls.Cert = {Path.GetFileName(files.Cert)}" +
                $"\n  Tls.Key  = {Path.GetFileName(files.Key)}");
            Console.WriteLine("and serve Listen on https:// (docs/config.md)");
            return Task.FromResult(0);
        }));
        return cmd;
    }

    static Command AddOperator()
    {
        var name = new Argument<string>("name") { Description = "The operator's name, e.g. alice" };
        var role = new Option<string>("--role")
            { Description = "admin (may change anything) or reader (may only read)", Required = true };
        role.AcceptOnlyFromAmong("admin", "reader");
        var dir = DirOption();
        var cmd = new Command("add", "Issue an operator's client certificate carrying its role") { name, role, dir };
        cmd.SetAction((pr, ct) => CommandTree.Run(() =>
        {
            var kind = pr.GetValue(role) == "admin" ? PeerKind.Admin : PeerKind.Reader;
            using var ca = Wrap(() => ClusterCa.Open(pr.GetValue(dir)!));
            var files = Wrap(() => ca.IssueOperator(pr.GetValue(name)!, kind));
            Console.WriteLine($"operator {pr.GetValue(name)} ({pr.GetValue(role)}): files in " +
                $"{Path.GetFullPath(files.Folder)}; use them in a context:");
            Console.WriteLine($"  capsule context set NAME --directory https://HOST:7472 --ca {files.Ca} " +
                $"--cert {files.Cert} --key {files.Key}");
            return Task.FromResult(0);
        }));
        return cmd;
    }

    /// <summary>Runs a CA step; its problems are the user's to fix (a missing CA, a name taken).</summary>
    static T Wrap<T>(Func<T> f)
    {
        try
        {
            return f();
        }
        catch (TrustException e)
        {
            throw new UserError(e.Message);
        }
        catch (IOException e)
        {
            throw new UserError(e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new UserError(e.Message);
        }
    }
}
