using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Capsule.Trust;

/// <summary>What issuing wrote: the holder's certificate, its private key and the CA's certificate.</summary>
public sealed record IssuedFiles(string Folder, string Cert, string Key, string Ca);

/// <summary>
/// The cluster's certificate authority: an ECDSA P-256 key and a self-signed certificate in a folder
/// (<c>ca.crt</c>, <c>ca.key</c>), which issues host, directory and operator certificates into sub-folders
/// (<c>hosts/NAME</c>, <c>operators/NAME</c>), each with the CA's certificate beside them, ready to copy to where
/// they are used. Every certificate is made by <see cref="CertificateRequest"/>; nothing here is hand-made.
/// </summary>
public sealed class ClusterCa : IDisposable
{
    public const string CaCertFile = "ca.crt";
    public const string CaKeyFile = "ca.key";
    public static readonly TimeSpan CaLifetime = TimeSpan.FromDays(3650);
    public static readonly TimeSpan LeafLifetime = TimeSpan.FromDays(365);
    /// <summary>Clocks between machines differ a little: a new certificate is valid from a few minutes ago.</summary>
    static readonly TimeSpan Skew = TimeSpan.FromMinutes(5);

    readonly string _folder;
    readonly X509Certificate2 _ca;

    ClusterCa(string folder, X509Certificate2 ca)
    {
        _folder = folder;
        _ca = ca;
    }

    /// <summary>The CA's certificate (public): what every party trusts.</summary>
    public X509Certificate2 Certificate => _ca;

    public string Folder => _folder;

    /// <summary>Makes a new CA in <paramref name="folder"/>; refuses to replace one that is there.</summary>
    public static ClusterCa Create(string folder)
    {
        var certPath = Path.Combine(folder, CaCertFile);
        var keyPath = Path.Combine(folder, CaKeyFile);
        if (File.Exists(certPath) || File.Exists(keyPath))
            throw new TrustException($"{folder} already holds a cluster CA ({CaCertFile}, {CaKeyFile}); a second " +
                "one would not be trusted by anything issued so far. Use another --dir, or remove it on purpose");
        Directory.CreateDirectory(folder);
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(CaSubject(), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(
            X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        using var self = request.CreateSelfSigned(now - Skew, now + CaLifetime);
        KeyFiles.WriteKey(keyPath, key);
        KeyFiles.WriteCert(certPath, self);
        return Open(folder);
    }

    /// <summary>The CA in <paramref name="folder"/>, with its private key (to issue).</summary>
    public static ClusterCa Open(string folder)
    {
        var certPath = Path.Combine(folder, CaCertFile);
        if (!File.Exists(certPath))
            throw new TrustException($"no cluster CA in {folder} (no {CaCertFile}): make one with " +
                $"`capsule cluster init --dir {folder}`, or give the CA's folder with --dir");
        return new ClusterCa(folder, KeyFiles.ReadCertWithKey(certPath, Path.Combine(folder, CaKeyFile), "the CA's"));
    }

    static X500DistinguishedName CaSubject()
    {
        var b = new X500DistinguishedNameBuilder();
        b.AddOrganizationName(PeerIdentity.Organization);
        b.AddCommonName("capsule cluster CA");
        return b.Build();
    }

    /// <summary>
    /// A host's (or the directory's) certificate: CN and a DNS name of <paramref name="name"/>, an IP address
    /// of <paramref name="address"/> (where others reach it, checked by their TLS name check), server and client
    /// authentication (a host both serves and calls).
    /// </summary>
    public IssuedFiles IssueHost(string name, IPAddress address, PeerKind kind = PeerKind.Host,
        DateTimeOffset? notBefore = null, TimeSpan? lifetime = null)
    {
        if (kind is not (PeerKind.Host or PeerKind.Directory))
            throw new ArgumentException("a host certificate is for a host or the directory", nameof(kind));
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName(name);
        san.AddIpAddress(address);
        return Issue("hosts", name, kind, san.Build(), [Oids.ServerAuth, Oids.ClientAuth], notBefore, lifetime);
    }

    /// <summary>An operator's client certificate carrying its role (admin or reader) in the subject's OU.</summary>
    public IssuedFiles IssueOperator(string name, PeerKind role, DateTimeOffset? notBefore = null,
        TimeSpan? lifetime = null)
    {
        if (role is not (PeerKind.Admin or PeerKind.Reader))
            throw new ArgumentException("an operator's role is admin or reader", nameof(role));
        return Issue("operators", name, role, null, [Oids.ClientAuth], notBefore, lifetime);
    }

    IssuedFiles Issue(string group, string name, PeerKind kind, X509Extension? san, Oid[] usages,
        DateTimeOffset? notBefore, TimeSpan? lifetime)
    {
        if (NameError(name) is { } bad) throw new TrustException(bad);
        var folder = Path.Combine(_folder, group, name);
        if (Directory.Exists(folder))
            throw new TrustException($"{group[..^1]} '{name}' already has a certificate ({folder}); pick another " +
                "name, or remove that folder to issue it again");
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(PeerIdentity.Subject(kind, name), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        var eku = new OidCollection();
        foreach (var u in usages) eku.Add(u);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(eku, false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(_ca, true, false));
        if (san is not null) request.CertificateExtensions.Add(san);
        var from = notBefore ?? DateTimeOffset.UtcNow - Skew;
        var until = from + (lifetime ?? LeafLifetime);
        if (until > _ca.NotAfter) until = _ca.NotAfter; // a leaf cannot outlive its issuer
        using var cert = request.Create(_ca, from, until, RandomNumberGenerator.GetBytes(16));
        Directory.CreateDirectory(folder);
        var files = new IssuedFiles(folder, Path.Combine(folder, name + ".crt"), Path.Combine(folder, name + ".key"),
            Path.Combine(folder, CaCertFile));
        KeyFiles.WriteKey(files.Key, key);
        KeyFiles.WriteCert(files.Cert, cert);
        KeyFiles.WriteCert(files.Ca, _ca);
        return files;
    }

    /// <summary>Why <paramref name="name"/> cannot name a certificate (and its folder), or null.</summary>
    public static string? NameError(string name) =>
        name.Length is >= 1 and <= 63 && char.IsAsciiLetterLower(name[0])
            && name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '-' or '.')
            ? null
            : $"'{name}' is not a usable name: write 1-63 characters of a-z, 0-9, '-' and '.', starting with a letter";

    public void Dispose() => _ca.Dispose();
}

/// <summary>The extended key usages a cluster certificate may carry.</summary>
public static class Oids
{
    public static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1", "Server Authentication");
    public static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2", "Client Authentication");
}
