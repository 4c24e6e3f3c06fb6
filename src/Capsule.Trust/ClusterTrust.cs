using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Capsule.Trust;

/// <summary>
/// Whether a certificate was issued by the cluster CA, is in date and may be used as asked, checked by
/// <see cref="X509Chain"/> with the cluster CA as the only trusted root (no system store, no other CA).
/// </summary>
public static class ClusterTrust
{
    /// <summary>
    /// The chain policy that trusts <paramref name="ca"/> alone, for <paramref name="usage"/> (client or server
    /// authentication). Revocation is not checked: the cluster has no revocation list yet (docs/security.md).
    /// </summary>
    public static X509ChainPolicy Policy(X509Certificate2 ca, Oid usage)
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
        };
        policy.CustomTrustStore.Add(ca);
        policy.ApplicationPolicy.Add(usage);
        return policy;
    }

    /// <summary>
    /// The identity <paramref name="cert"/> names when the cluster CA vouches for it for <paramref name="usage"/>
    /// at <paramref name="at"/> (now when null); else null, and <paramref name="why"/> says what is wrong.
    /// </summary>
    public static PeerIdentity? Validate(X509Certificate2 cert, X509Certificate2 ca, Oid usage, out string why,
        DateTime? at = null)
    {
        using var chain = new X509Chain { ChainPolicy = Policy(ca, usage) };
        if (at is { } when) chain.ChainPolicy.VerificationTime = when;
        try
        {
            if (!chain.Build(cert))
            {
                why = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Distinct());
                if (why.Length == 0) why = "its chain does not lead to the cluster CA";
                return null;
            }
        }
        catch (CryptographicException e)
        {
            why = e.Message;
            return null;
        }
        finally
        {
            foreach (var e in chain.ChainElements) if (!ReferenceEquals(e.Certificate, cert)) e.Certificate.Dispose();
        }
        if (PeerIdentity.Of(cert) is not { } identity)
        {
            why = $"its subject ({cert.Subject}) names no Capsule host or operator role";
            return null;
        }
        why = "";
        return identity;
    }
}
