using System.Net;
using System.Security.Cryptography.X509Certificates;
using Capsule.Trust;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The cluster CA (Capsule.Trust) as plain unit tests: no lab. Issuing, validating against the cluster CA only,
/// reading the role, the files' modes and the errors people see.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class TrustTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-trust-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    ClusterCa NewCa(string name = "ca") => ClusterCa.Create(Path.Combine(_dir, name));

    static X509Certificate2 Load(IssuedFiles f) => X509Certificate2.CreateFromPemFile(f.Cert, f.Key);

    [Fact]
    public void A_host_certificate_is_bound_to_its_name_and_address_and_validates()
    {
        using var ca = NewCa();
        var files = ca.IssueHost("h1", IPAddress.Parse("10.0.0.5"));
        using var cert = Load(files);
        using var caFile = KeyFiles.ReadCert(files.Ca, "the CA's");
        var identity = ClusterTrust.Validate(cert, caFile, Oids.ClientAuth, out var why);
        Assert.True(identity is not null, why);
        Assert.Equal(new PeerIdentity(PeerKind.Host, "h1"), identity);
        Assert.NotNull(ClusterTrust.Validate(cert, ca.Certificate, Oids.ServerAuth, out _));
        Assert.True(cert.MatchesHostname("h1"));
        Assert.True(cert.MatchesHostname("10.0.0.5"));
        Assert.False(cert.MatchesHostname("10.0.0.6"));
        Assert.False(cert.MatchesHostname("h2"));
    }

    [Fact]
    public void A_certificate_from_another_ca_is_refused()
    {
        using var ours = NewCa("ours");
        using var theirs = NewCa("theirs");
        using var cert = Load(theirs.IssueHost("h1", IPAddress.Parse("10.0.0.5")));
        Assert.Null(ClusterTrust.Validate(cert, ours.Certificate, Oids.ClientAuth, out var why));
        Assert.NotEmpty(why);
    }

    [Fact]
    public void An_expired_certificate_is_refused()
    {
        using var ca = NewCa();
        var files = ca.IssueOperator("old", PeerKind.Admin, lifetime: TimeSpan.FromDays(1));
        using var cert = Load(files);
        Assert.NotNull(ClusterTrust.Validate(cert, ca.Certificate, Oids.ClientAuth, out _));
        // Two days on, the CA is still valid and the operator's one-day certificate is not.
        Assert.Null(ClusterTrust.Validate(cert, ca.Certificate, Oids.ClientAuth, out var why,
            DateTime.Now.AddDays(2)));
        Assert.NotEmpty(why);
    }

    [Fact]
    public void Operator_roles_are_read_back_and_operators_cannot_serve()
    {
        using var ca = NewCa();
        using var admin = Load(ca.IssueOperator("alice", PeerKind.Admin));
        using var reader = Load(ca.IssueOperator("bob", PeerKind.Reader));
        Assert.Equal(new PeerIdentity(PeerKind.Admin, "alice"),
            ClusterTrust.Validate(admin, ca.Certificate, Oids.ClientAuth, out _));
        Assert.Equal(new PeerIdentity(PeerKind.Reader, "bob"),
            ClusterTrust.Validate(reader, ca.Certificate, Oids.ClientAuth, out _));
        // Client authentication only: an operator's certificate cannot pass for a server's.
        Assert.Null(ClusterTrust.Validate(reader, ca.Certificate, Oids.ServerAuth, out _));
    }

    [Fact]
    public void A_subject_without_our_role_names_no_one()
    {
        using var ca = NewCa();
        using var cert = Load(ca.IssueHost("h1", IPAddress.Parse("10.0.0.5")));
        Assert.Equal(PeerKind.Host, PeerIdentity.Of(cert)!.Kind);
        using var key = System.Security.Cryptography.ECDsa.Create();
        var request = new CertificateRequest("CN=h1, OU=root, O=capsule", key,
            System.Security.Cryptography.HashAlgorithmName.SHA256);
        using var odd = request.CreateSelfSigned(DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddDays(1));
        Assert.Null(PeerIdentity.Of(odd));
    }

    [Fact]
    public void Private_keys_are_written_0600_and_names_are_not_reissued()
    {
        using var ca = NewCa();
        var files = ca.IssueHost("h1", IPAddress.Parse("10.0.0.5"));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(files.Key));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite,
            File.GetUnixFileMode(Path.Combine(ca.Folder, ClusterCa.CaKeyFile)));
        var taken = Assert.Throws<TrustException>(() => ca.IssueHost("h1", IPAddress.Parse("10.0.0.6")));
        Assert.Contains("already has a certificate", taken.Message);
        Assert.Throws<TrustException>(() => ca.IssueOperator("Bad Name", PeerKind.Admin));
    }

    [Fact]
    public void A_missing_ca_and_a_second_init_are_clear_errors()
    {
        var missing = Assert.Throws<TrustException>(() => ClusterCa.Open(Path.Combine(_dir, "none")));
        Assert.Contains("capsule cluster init", missing.Message);
        using var ca = NewCa();
        var again = Assert.Throws<TrustException>(() => ClusterCa.Create(ca.Folder));
        Assert.Contains("already holds a cluster CA", again.Message);
    }
}
