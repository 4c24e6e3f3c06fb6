using Capsule.Trust;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Mutual TLS on the lab's underlay (issue 10): an agent's TCP port answers nothing to a caller without a client
/// certificate of the lab's CA, plaintext or TLS, and answers one with such a certificate; an operator's CLI
/// with a certificate reaches the directory and agents over https from inside the lab.
/// </summary>
[Collection("lab")]
public sealed class TlsLabTests(LabFixture lab) : IDisposable
{
    const string Agent = "https://198.18.0.1:7471";
    const string ConfigVariable = global::Capsule.Cli.ClientConfig.PathVariable;
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-tls-lab-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string LabCa => new LabPaths(lab.Name).CaDir;

    /// <summary>The HTTP status curl got from h2 (000: no HTTP answer at all), with extra curl options.</summary>
    async Task<string> StatusFromH2(string url, params string[] options)
    {
        var r = await lab.OnHost("h2", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            .. options, url]);
        return r.Out.Trim();
    }

    [Fact]
    public async Task An_agent_answers_only_callers_with_a_certificate_of_the_cluster_ca()
    {
        // Plaintext HTTP/2 (as an unauthenticated gRPC client speaks it): no HTTP answer.
        Assert.Equal("000", await StatusFromH2("http://198.18.0.1:7471/", "--http2-prior-knowledge"));
        // TLS without a client certificate: the handshake fails.
        Assert.Equal("000", await StatusFromH2(Agent + "/", "--http2", "-k"));
        // TLS with a certificate of another CA, even one naming an admin: refused too.
        using (var other = ClusterCa.Create(Path.Combine(_dir, "other")))
        {
            var rogue = other.IssueOperator("mallory", PeerKind.Admin);
            Assert.Equal("000", await StatusFromH2(Agent + "/", "--http2", "-k", "--cert", rogue.Cert,
                "--key", rogue.Key));
        }
        // The lab's own CA's operator: an HTTP answer (whatever the path's status), so the refusals above were TLS.
        var ok = (await lab.Run("operator", "add", "tlsok" + Random.Shared.Next(100000), "--role", "admin",
            "--dir", LabCa)).Ok();
        var folder = Directory.GetDirectories(Path.Combine(LabCa, "operators")).Single(d => ok.Out.Contains(d));
        var name = Path.GetFileName(folder);
        var status = await StatusFromH2(Agent + "/", "--http2", "--cacert", Path.Combine(folder, "ca.crt"),
            "--cert", Path.Combine(folder, name + ".crt"), "--key", Path.Combine(folder, name + ".key"));
        Assert.NotEqual("000", status);
    }

    [Fact]
    public async Task An_operator_with_a_certificate_uses_the_cli_over_https_from_inside_the_lab()
    {
        var name = "cli" + Random.Shared.Next(100000);
        (await lab.Run("operator", "add", name, "--role", "admin", "--dir", LabCa)).Ok();
        var folder = Path.Combine(LabCa, "operators", name);
        var config = Path.Combine(_dir, "client.json");
        var env = new Dictionary<string, string> { [ConfigVariable] = config };
        (await Cli.Exec(Cli.Binary, ["context", "set", "tls", "--directory", "https://198.18.0.254:7472",
            "--ca", Path.Combine(folder, "ca.crt"), "--cert", Path.Combine(folder, name + ".crt"),
            "--key", Path.Combine(folder, name + ".key")], env: env)).Ok();
        // From h3's namespace, where the directory and the agents are reachable on the underlay.
        var ls = (await lab.OnHost("h3", "env", $"{ConfigVariable}={config}", Cli.Binary, "--context", "tls",
            "stats", "h1", "--json")).Ok();
        Assert.Contains("counters", ls.Out);
    }
}
