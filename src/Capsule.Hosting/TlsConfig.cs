using Capsule.Trust;

namespace Capsule.Hosting;

/// <summary>
/// A daemon's "Tls" section: the cluster CA's certificate and this daemon's own certificate and private key
/// (PEM files, as `capsule host add` writes them). With it the daemon serves https:// only, to callers whose
/// client certificate the cluster CA issued, and calls other daemons with its certificate.
/// </summary>
public sealed class TlsConfig
{
    /// <summary>The cluster CA's certificate (ca.crt): the only issuer trusted, for callers and servers.</summary>
    public string? Ca { get; set; }

    /// <summary>This daemon's certificate (NAME.crt), issued by the cluster CA for its name and address.</summary>
    public string? Cert { get; set; }

    /// <summary>This daemon's private key (NAME.key), mode 0600.</summary>
    public string? Key { get; set; }

    [System.Text.Json.Serialization.JsonIgnore]
    public bool IsEmpty => string.IsNullOrEmpty(Ca) && string.IsNullOrEmpty(Cert) && string.IsNullOrEmpty(Key);

    /// <summary>Adds what is wrong with the section (keys missing, files absent or unreadable) to errors.</summary>
    public void Validate(List<string> errors)
    {
        if (IsEmpty) return;
        var missing = new[] { ("Ca", Ca), ("Cert", Cert), ("Key", Key) }.Where(k => string.IsNullOrEmpty(k.Item2))
            .Select(k => "Tls." + k.Item1).ToList();
        if (missing.Count > 0)
        {
            errors.Add($"{string.Join(", ", missing)} missing: a Tls section needs Ca, Cert and Key " +
                "(`capsule host add` writes the three files), or leave the section out");
            return;
        }
        foreach (var (key, path) in new[] { ("Ca", Ca!), ("Cert", Cert!), ("Key", Key!) })
            if (!Path.IsPathFullyQualified(path))
                errors.Add($"Tls.{key}: '{path}' is a relative path; write an absolute one");
        if (errors.Count > 0) return;
        try
        {
            using var identity = Load();
            if (identity.Certificate.NotAfter < DateTime.Now)
                errors.Add($"Tls.Cert: {Cert} expired on {identity.Certificate.NotAfter:u}; issue a new one " +
                    "with `capsule host add`");
            else if (ClusterTrust.Validate(identity.Certificate, identity.Ca, Oids.ServerAuth, out var why) is null)
                errors.Add($"Tls.Cert: {Cert} is not a server certificate of the cluster CA in {Ca}: {why}");
        }
        catch (TrustException e)
        {
            errors.Add("Tls: " + e.Message);
        }
    }

    /// <summary>The certificates themselves (valid settings only).</summary>
    public TlsIdentity Load() => TlsIdentity.Load(Ca!, Cert!, Key!);
}
