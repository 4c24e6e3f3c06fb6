using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Capsule.Agent.Linux;
using Capsule.Protos;
using Capsule.Trust;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Authorization per call (issue 10), over the lab's mutual TLS: a reader operator cannot migrate (an admin
/// can), and a host cannot change a capsule it does not hold, nor another host's record, in the directory.
/// </summary>
[Collection("lab")]
public sealed class AuthorizationTests(LabFixture lab) : IDisposable
{
    const string ConfigVariable = global::Capsule.Cli.ClientConfig.PathVariable;
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-authz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    LabPaths Paths => new(lab.Name);

    /// <summary>The CLI run from h3's namespace as an operator of <paramref name="role"/>, over https.</summary>
    async Task<Func<string[], Task<Cli.Result>>> OperatorAsync(PeerKind role)
    {
        var name = $"{role.ToString().ToLowerInvariant()}{Random.Shared.Next(100000)}";
        var files = LabTrust.Operator(Paths, name, role);
        var config = Path.Combine(_dir, name + ".json");
        var env = new Dictionary<string, string> { [ConfigVariable] = config };
        (await Cli.Exec(Cli.Binary, ["context", "set", name, "--directory", LabPaths.DirectoryApi,
            "--ca", files.Ca, "--cert", files.Cert, "--key", files.Key], env: env)).Ok();
        return args => lab.OnHost("h3", ["env", $"{ConfigVariable}={config}", Cli.Binary, "--context", name, .. args]);
    }

    async Task<string> HostOf(string capsule)
    {
        var ls = (await lab.Run("ls", "--json")).Ok();
        using var doc = System.Text.Json.JsonDocument.Parse(ls.Out);
        return doc.RootElement.EnumerateArray().Single(c => c.GetProperty("name").GetString() == capsule)
            .GetProperty("host").GetString()!;
    }

    [Fact]
    public async Task A_reader_operator_cannot_migrate_and_an_admin_can()
    {
        await lab.Create("authz-mv", "h1", "sleep", "infinity");
        try
        {
            var reader = await OperatorAsync(PeerKind.Reader);
            // A reader reads...
            (await reader(["stats", "h1", "--json"])).Ok();
            // ...and is refused a migration in words that say why; the capsule stays where it was.
            var refused = await reader(["migrate", "authz-mv", "--to", "h2"]);
            Assert.NotEqual(0, refused.Code);
            Assert.Contains("may not", refused.Err + refused.Out);
            Assert.Contains("reader", refused.Err + refused.Out);
            Assert.Equal("h1", await HostOf("authz-mv"));

            var admin = await OperatorAsync(PeerKind.Admin);
            (await admin(["migrate", "authz-mv", "--to", "h2"])).Ok();
            Assert.Equal("h2", await HostOf("authz-mv"));
        }
        finally
        {
            await lab.Run("rm", "authz-mv");
        }
    }

    [Fact]
    public async Task A_host_cannot_update_a_capsule_it_does_not_hold_nor_another_hosts_record()
    {
        await lab.Create("authz-dir", "h1", "sleep", "infinity");
        try
        {
            using var channel = ChannelAs("h2", LabPaths.DirectoryApi);
            var directory = new CapsuleDirectory.CapsuleDirectoryClient(channel);
            var before = await directory.GetSnapshotAsync(new SnapshotRequest());
            var entry = before.Capsules.Single(c => c.Name == "authz-dir");
            var h2 = before.Hosts.Single(h => h.Name == "h2");
            var h1 = before.Hosts.Single(h => h.Name == "h1");

            // Its own record: allowed (so what follows is refused for who asks, not for how).
            await directory.PutHostAsync(h2);

            var update = await Assert.ThrowsAsync<RpcException>(async () => await directory.UpdateAsync(
                new UpdateRequest { Name = "authz-dir", Host = "h2", State = entry.State, ExpectRevision = 0 }));
            Assert.Equal(StatusCode.PermissionDenied, update.StatusCode);
            Assert.Contains("held by host h1", update.Status.Detail);
            var release = await Assert.ThrowsAsync<RpcException>(async () =>
                await directory.ReleaseAsync(new NameRequest { Name = "authz-dir" }));
            Assert.Equal(StatusCode.PermissionDenied, release.StatusCode);
            var steal = await Assert.ThrowsAsync<RpcException>(async () =>
                await directory.PutHostAsync(new Host(h1) { AgentEndpoint = "https://198.18.0.2:7471" }));
            Assert.Equal(StatusCode.PermissionDenied, steal.StatusCode);

            var after = await directory.GetSnapshotAsync(new SnapshotRequest());
            Assert.Equal(entry, after.Capsules.Single(c => c.Name == "authz-dir"));
            Assert.Equal(h1, after.Hosts.Single(h => h.Name == "h1"));
            Assert.Equal("h1", await HostOf("authz-dir"));

            // At an agent, too: h2 may not hold the packets of a capsule it is not the host of.
            using var toH1 = ChannelAs("h2", "https://198.18.0.1:7471");
            var agent = new HostAgent.HostAgentClient(toH1);
            var hold = await Assert.ThrowsAsync<RpcException>(async () => await agent.HoldAsync(
                new HoldRequest { Locator = entry.Locator, Via = "198.18.0.2" }));
            Assert.Equal(StatusCode.PermissionDenied, hold.StatusCode);
        }
        finally
        {
            await lab.Run("rm", "authz-dir");
        }
    }

    /// <summary>
    /// A gRPC channel that speaks from inside the lab's underlay, as host <paramref name="host"/> with its
    /// certificate, to <paramref name="address"/>: each connection's socket is made in h3's network namespace
    /// (a thread joins it, makes the socket and ends; the socket stays in that namespace).
    /// </summary>
    GrpcChannel ChannelAs(string host, string address)
    {
        var folder = Path.Combine(Paths.CaDir, "hosts", host);
        var identity = TlsIdentity.Load(Path.Combine(folder, ClusterCa.CaCertFile),
            Path.Combine(folder, host + ".crt"), Path.Combine(folder, host + ".key"));
        var netns = Path.Combine(Netns.Dir, $"{lab.Name}-h3");
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                ClientCertificates = [identity.Certificate],
                RemoteCertificateValidationCallback = (_, _, _, _) => true, // the server is not what is tested
            },
            ConnectCallback = async (context, ct) =>
            {
                var socket = SocketIn(netns);
                try
                {
                    var to = new IPEndPoint(IPAddress.Parse(context.DnsEndPoint.Host), context.DnsEndPoint.Port);
                    await socket.ConnectAsync(to, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return GrpcChannel.ForAddress(address, new GrpcChannelOptions { HttpHandler = handler });
    }

    static Socket SocketIn(string netns)
    {
        Socket? socket = null;
        Exception? failed = null;
        var t = new Thread(() =>
        {
            try
            {
                using var ns = File.OpenHandle(netns);
                if (Native.setns((int)ns.DangerousGetHandle(), Native.CLONE_NEWNET) != 0)
                    throw new IOException($"setns {netns}: errno {Native.Errno}");
                socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            }
            catch (Exception e)
            {
                failed = e;
            }
        });
        t.Start();
        t.Join();
        return socket ?? throw new IOException("no socket in " + netns, failed);
    }
}
