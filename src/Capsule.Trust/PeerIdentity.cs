using System.Security.Cryptography.X509Certificates;

namespace Capsule.Trust;

/// <summary>What a cluster certificate vouches for: a host or the directory by name, or an operator's role.</summary>
public enum PeerKind
{
    /// <summary>A host's agent (CN = the host's name).</summary>
    Host,
    /// <summary>The directory daemon: a server only; as a caller it has no rights of its own.</summary>
    Directory,
    /// <summary>An operator who may change anything (create, exec, remove, migrate, suspend, resume).</summary>
    Admin,
    /// <summary>An operator who may only read.</summary>
    Reader,
}

/// <summary>
/// Who a validated certificate names. The role rides in the subject: <c>CN=NAME, OU=ROLE, O=capsule</c> with ROLE
/// one of host, directory, admin, reader (see docs/security.md). A subject field, not a SAN URI, because .NET reads
/// subject fields without a hand-written ASN.1 parser, and because a role is what the certificate says its holder
/// is, as an OU says.
/// </summary>
public sealed record PeerIdentity(PeerKind Kind, string Name)
{
    public const string Organization = "capsule";

    public static string RoleName(PeerKind kind) => kind.ToString().ToLowerInvariant();

    public bool IsOperator => Kind is PeerKind.Admin or PeerKind.Reader;

    public override string ToString() =>
        IsOperator ? $"operator {Name} ({RoleName(Kind)})" : $"{RoleName(Kind)} {Name}";

    /// <summary>The subject a certificate for <paramref name="kind"/> named <paramref name="name"/> carries.</summary>
    public static X500DistinguishedName Subject(PeerKind kind, string name)
    {
        var b = new X500DistinguishedNameBuilder();
        b.AddOrganizationName(Organization);
        b.AddOrganizationalUnitName(RoleName(kind));
        b.AddCommonName(name);
        return b.Build();
    }

    /// <summary>
    /// The identity in <paramref name="cert"/>'s subject, or null when it carries none of ours (one CN, one OU
    /// naming a known role, O=capsule). Only meaningful for a certificate already validated against the cluster CA.
    /// </summary>
    public static PeerIdentity? Of(X509Certificate2 cert)
    {
        string? cn = null, ou = null, o = null;
        var count = 0;
        foreach (var rdn in cert.SubjectName.EnumerateRelativeDistinguishedNames())
        {
            count++;
            if (rdn.HasMultipleElements) return null;
            var value = rdn.GetSingleElementValue();
            switch (rdn.GetSingleElementType().Value)
            {
                case "2.5.4.3" when cn is null: cn = value; break;
                case "2.5.4.11" when ou is null: ou = value; break;
                case "2.5.4.10" when o is null: o = value; break;
                default: return null; // a second CN or OU, or a field we do not issue: not ours
            }
        }
        if (count != 3 || o != Organization || string.IsNullOrEmpty(cn)) return null;
        return ou switch
        {
            "host" => new(PeerKind.Host, cn),
            "directory" => new(PeerKind.Directory, cn),
            "admin" => new(PeerKind.Admin, cn),
            "reader" => new(PeerKind.Reader, cn),
            _ => null,
        };
    }
}
