using System.Security.Cryptography.X509Certificates;

namespace Capsule.Trust;

/// <summary>
/// A party's certificate with its private key, and the cluster CA's certificate it trusts: what a daemon serves
/// and calls with, and what the CLI calls with.
/// </summary>
public sealed record TlsIdentity(X509Certificate2 Certificate, X509Certificate2 Ca) : IDisposable
{
    /// <summary>Reads the three PEM files; a <see cref="TrustException"/> names the one that is wrong.</summary>
    public static TlsIdentity Load(string ca, string cert, string key) =>
        new(KeyFiles.ReadCertWithKey(cert, key, "this party's"), KeyFiles.ReadCert(ca, "the cluster CA's certificate"));

    public void Dispose()
    {
        Certificate.Dispose();
        Ca.Dispose();
    }
}
