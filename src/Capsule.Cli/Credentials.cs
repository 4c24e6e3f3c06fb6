using System.CommandLine;
using Capsule.Rpc;
using Capsule.Trust;

namespace Capsule.Cli;

/// <summary>
/// An operator's certificate on a command line: --ca, --cert and --key, as `capsule context set` keeps them in a
/// context and `capsule directory init|import` hands them to an etcd with client-certificate auth.
/// </summary>
internal sealed class Credentials
{
    public Option<string> Ca { get; } = new("--ca") { Description = "The cluster CA's certificate (ca.crt)" };
    public Option<string> Cert { get; } = new("--cert") { Description = "Your certificate (`capsule operator add`)" };
    public Option<string> Key { get; } = new("--key") { Description = "Your private key (mode 0600)" };

    public void AddTo(Command c)
    {
        c.Options.Add(Ca);
        c.Options.Add(Cert);
        c.Options.Add(Key);
    }

    /// <summary>Makes them this process's identity for every https:// channel; nothing when none given.</summary>
    public void Use(ParseResult pr)
    {
        string? ca = pr.GetValue(Ca), cert = pr.GetValue(Cert), key = pr.GetValue(Key);
        if (ca is null && cert is null && key is null) return;
        if (ca is null || cert is null || key is null)
            throw new UserError("give --ca, --cert and --key together (an operator's files from " +
                "`capsule operator add`), or none of them for an etcd without TLS");
        try
        {
            Channels.UseIdentity(TlsIdentity.Load(ca, cert, key));
        }
        catch (TrustException e)
        {
            throw new UserError($"{e.Message}; check --ca, --cert and --key");
        }
    }
}
