using System.Diagnostics;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>A lab of its own for the DNS tests: three hosts, so a capsule can move away from both ends.</summary>
public sealed class DnsLabFixture : LabFixture;

/// <summary>
/// Capsules find each other by name (issue 15): every agent answers DNS for capsule names from its view of the
/// directory, a capsule's DNS goes to its agent, and the gateway answers ordinary hosts. Unmodified curl,
/// getent and python.
/// </summary>
[Collection("lab")]
public sealed class DnsTests(DnsLabFixture lab) : IClassFixture<DnsLabFixture>
{
    [Fact]
    public async Task A_client_capsule_reaches_web_by_name_and_again_after_web_moves()
    {
        try
        {
            var (web, _) = await lab.Create("web", "h1", "python3", "-m", "http.server", "8080");
            await lab.Create("client", "h2", "sleep", "infinity");
            await LabFixture.Until(async () =>
                (await lab.InCapsule("client", "curl", "-s", "-o", "/dev/null", "-m", "2", "http://web:8080/"))
                    .Code == 0, "http://web:8080/ to answer the client capsule by name", seconds: 30);
            Assert.Contains(web, (await lab.InCapsule("client", "getent", "hosts", "web.capsule.internal")).Ok().Out);
            var m = await lab.Migrate("web", "h3");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            // A new connection by name, at once: the name answers the same locator, now on h3.
            (await lab.InCapsule("client", "curl", "-sS", "-o", "/dev/null", "-m", "5", "http://web:8080/")).Ok();
            Assert.Contains(web, (await lab.InCapsule("client", "getent", "hosts", "web")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "client");
            await lab.Run("rm", "web");
        }
    }

    /// <summary>Only DNS to nameservers outside the pool goes to the agent: a capsule may serve DNS itself.</summary>
    [Fact]
    public async Task A_query_to_another_capsules_port_53_reaches_that_capsule_not_the_agent()
    {
        try
        {
            var (ns, _) = await lab.Create("udp53", "h1", "python3", "-c", """
                import socket
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("0.0.0.0", 53))
                while True:
                    data, peer = s.recvfrom(512)
                    s.sendto(b"capsule:" + data, peer)
                """);
            await lab.Create("ask53", "h2", "sleep", "infinity");
            var probe = $"""
                import socket
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(1)
                s.sendto(b"ping", ("{ns}", 53))
                print(s.recvfrom(512)[0].decode())
                """;
            var answer = "";
            await LabFixture.Until(async () =>
            {
                var r = await lab.InCapsule("ask53", "python3", "-c", probe);
                answer = r.Out.Trim();
                return r.Code == 0;
            }, "the capsule's UDP server on port 53 to answer", seconds: 30);
            Assert.Equal("capsule:ping", answer);
        }
        finally
        {
            await lab.Run("rm", "ask53");
            await lab.Run("rm", "udp53");
        }
    }

    [Fact]
    public async Task An_ordinary_host_resolves_a_capsule_and_reaches_it_through_the_gateway()
    {
        // l1 shares this machine's files; its resolv.conf naming the gateway is bound in a mount namespace of the
        // command's own, as an ordinary host's own /etc/resolv.conf would name it.
        var conf = Path.Combine(Path.GetTempPath(), lab.Name + "-l1-resolv.conf");
        await File.WriteAllTextAsync(conf, "nameserver 198.51.100.1\noptions timeout:1 attempts:1\n");
        try
        {
            var (web, _) = await lab.Create("gweb", "h2", "python3", "-m", "http.server", "8081");
            var script = $"mount --bind {conf} /etc/resolv.conf && getent hosts gweb.capsule.internal && " +
                "curl -sS -o /dev/null -m 2 http://gweb.capsule.internal:8081/";
            Cli.Result r = new(1, "", "");
            await LabFixture.Until(async () =>
                (r = await lab.OnHost("l1", "unshare", "--mount", "--propagation", "private", "sh", "-c", script))
                    .Code == 0, "l1 to resolve gweb through the gateway and reach it", seconds: 30);
            Assert.Contains(web, r.Out);
        }
        finally
        {
            await lab.Run("rm", "gweb");
            File.Delete(conf);
        }
    }

    [Fact]
    public async Task A_container_capsule_resolves_by_name_from_its_own_resolv_conf_and_hosts_also_after_a_move()
    {
        try
        {
            var (peer, _) = await lab.Create("peer", "h1", "sleep", "infinity");
            var (own, _) = await lab.CreateWith("ctr", "h2", ["--rootfs", "/"], "sleep", "infinity");
            var conf = (await lab.InCapsule("ctr", "cat", "/etc/resolv.conf")).Ok().Out;
            Assert.Contains("search capsule.internal", conf);
            // Its own name from its hosts file, another's from its agent.
            Assert.Contains(own, (await lab.InCapsule("ctr", "getent", "hosts", "ctr")).Ok().Out);
            Assert.Contains(peer, (await lab.InCapsule("ctr", "getent", "hosts", "peer")).Ok().Out);
            var m = await lab.Migrate("ctr", "h3");
            Assert.True(m.GetProperty("ok").GetBoolean(), m.ToString());
            Assert.Contains(own, (await lab.InCapsule("ctr", "getent", "hosts", "ctr")).Ok().Out);
            Assert.Contains(peer, (await lab.InCapsule("ctr", "getent", "hosts", "peer")).Ok().Out);
        }
        finally
        {
            await lab.Run("rm", "ctr");
            await lab.Run("rm", "peer");
        }
    }

    [Fact]
    public async Task Python_http_server_in_a_capsule_answers_within_a_second_of_create()
    {
        try
        {
            var clock = Stopwatch.StartNew();
            var (web, _) = await lab.Create("quick", "h1", "python3", "-m", "http.server", "8082");
            // One command on l1 that polls until the server answers: no CLI start-up per attempt.
            (await lab.OnHost("l1", "timeout", "10", "sh", "-c",
                $"until curl -s -o /dev/null -m 0.3 http://{web}:8082/; do sleep 0.02; done")).Ok();
            clock.Stop();
            // Before capsules had a resolver this took 5-6 s: python's start-up name lookup waited out its
            // nameserver. The bound leaves room for a loaded machine around the second the issue asks for.
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1.5), $"create to answer took {clock.Elapsed}");
        }
        finally
        {
            await lab.Run("rm", "quick");
        }
    }
}
