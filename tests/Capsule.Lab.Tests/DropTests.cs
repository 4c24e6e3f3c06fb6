using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Everything the data plane must refuse is dropped, counted under its reason, and the agents keep
/// running: malformed datagrams, datagrams from an address that is no host, datagrams under a key the
/// host never gave out, and a capsule forging another locator as its source. (What an authentic datagram
/// may still be refused for, a capsule the host does not hold or a source locator of another host, only a
/// host holding a key can send: Forwarding.Inbound's own tests in Capsule.Core.Tests cover those.)
/// </summary>
[Collection("lab")]
public sealed class DropTests(LabFixture lab)
{
    // Sends N UDP datagrams (payload given as a Python bytes expression) from `bind` to h1's agent.
    static string[] Sender(string bind, string payload, int count = 5) =>
        ["python3", "-c",
            $"import socket;s=socket.socket(2,2);s.bind(('{bind}',0));" +
            $"[s.sendto({payload},('198.18.0.1',7470)) for _ in range({count})]"];

    // A well-formed overlay header (docs/wire-format.md: encrypted, epoch 0, a key id no host made, counter 1),
    // a minimal IPv4/UDP packet from src to dst in the clear, and a tag of zeros: what a forger without a key
    // can make.
    static string Wrapped(string src, string dst, int version = 2) =>
        $"bytes([0xCA,{version},1,1,0,0,0,0,0x7E,0x57,0x00,0x01,0,0,0,0,0,0,0,1])" +
            "+__import__('struct').pack('!BBHHHBBH4s4sHHHH',0x45,0,28,0,0,64,17,0," +
            $"socket.inet_aton('{src}'),socket.inet_aton('{dst}'),1,2,8,0)+bytes(16)";

    [Fact]
    public async Task Bad_datagrams_are_dropped_and_counted_by_reason_and_the_agent_keeps_running()
    {
        var (a, _) = await lab.Create("dropa", "h1", "sleep", "infinity");
        var (b, _) = await lab.Create("dropb", "h2", "sleep", "infinity");
        try
        {
            var before = await lab.Stats("h1");

            // From a known host (h2): garbage, a future version, and a datagram under a key id h1 never got.
            (await lab.OnHost("h2", Sender("198.18.0.2", "b'\\x00garbage-datagram'"))).Ok();
            (await lab.OnHost("h2", Sender("198.18.0.2", Wrapped(b, a, version: 9)))).Ok();
            (await lab.OnHost("h2", Sender("198.18.0.2", Wrapped(b, a)))).Ok();

            // From an address on the underlay that is no registered host: a well-formed datagram.
            var ul = $"--net=/run/netns/{lab.Name}-ul";
            (await Cli.Exec("nsenter", [ul, "--", "ip", "addr", "add", "198.18.0.240/24", "dev", "br0"])).Ok();
            try
            {
                (await Cli.Exec("nsenter", [ul, "--", .. Sender("198.18.0.240", Wrapped(b, a))])).Ok();
            }
            finally
            {
                await Cli.Exec("nsenter", [ul, "--", "ip", "addr", "del", "198.18.0.240/24", "dev", "br0"]);
            }

            // The agent counts a datagram once it has read it, a moment after it was sent: wait until
            // every reason has reached its count, then check that none went further.
            var after = before;
            long Delta(string k) => after["drop_" + k] - before["drop_" + k];
            string[] reasons = ["malformed", "bad_version", "unknown_key", "unknown_host"];
            await LabFixture.Until(async () =>
            {
                after = await lab.Stats("h1");
                return reasons.All(k => Delta(k) >= 5);
            }, "h1 to count every bad datagram", seconds: 10);
            Assert.Equal(5, Delta("malformed"));
            Assert.Equal(5, Delta("bad_version"));
            Assert.Equal(5, Delta("unknown_key"));
            Assert.Equal(5, Delta("unknown_host"));
            Assert.Equal(before["ingress_packets"], after["ingress_packets"]); // none of it was delivered

            // Still forwarding.
            (await lab.InCapsule("dropa", "ping", "-c", "2", "-W", "2", b)).Ok();
        }
        finally
        {
            await lab.Run("rm", "dropa");
            await lab.Run("rm", "dropb");
        }
    }

    [Fact]
    public async Task A_capsule_cannot_send_with_another_locator_as_its_source()
    {
        var (a, _) = await lab.Create("forger", "h1", "sleep", "infinity");
        var (victim, _) = await lab.Create("victim", "h1", "sleep", "infinity");
        var (b, _) = await lab.Create("target", "h2", "sleep", "infinity");
        try
        {
            var h1Before = await lab.Stats("h1");
            var h2Before = await lab.Stats("h2");
            // A raw socket inside the capsule writes its own IP header with the victim's locator as source.
            var forge = $"import socket,struct;s=socket.socket(2,socket.SOCK_RAW,socket.IPPROTO_RAW);" +
                        "p=struct.pack('!BBHHHBBH4s4sHHHH',0x45,0,28,0,0,64,17,0," +
                        $"socket.inet_aton('{victim}'),socket.inet_aton('{b}'),1,9,8,0);" +
                        $"[s.sendto(p,('{b}',0)) for _ in range(7)]";
            (await lab.InCapsule("forger", "python3", "-c", forge)).Ok();
            var h1After = h1Before;
            await LabFixture.Until(async () =>
            {
                h1After = await lab.Stats("h1");
                return h1After["drop_kernel_spoofed_source"] - h1Before["drop_kernel_spoofed_source"] >= 7;
            }, "h1 to count the forged packets", seconds: 10);
            var h2After = await lab.Stats("h2");
            Assert.Equal(7, h1After["drop_kernel_spoofed_source"] - h1Before["drop_kernel_spoofed_source"]);
            Assert.Equal(h1Before["egress_packets"], h1After["egress_packets"]);
            Assert.Equal(h2Before["ingress_packets"], h2After["ingress_packets"]);

            // The same capsule sending honestly still gets through.
            (await lab.InCapsule("forger", "ping", "-c", "2", "-W", "2", b)).Ok();
            Assert.NotEqual(a, victim);
        }
        finally
        {
            await lab.Run("rm", "forger");
            await lab.Run("rm", "victim");
            await lab.Run("rm", "target");
        }
    }
}
