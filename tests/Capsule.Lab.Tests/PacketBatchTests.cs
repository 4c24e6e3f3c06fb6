using Capsule.Agent.DataPlane;
using Capsule.Agent.Linux;
using Capsule.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// How the egress batch groups datagrams into UDP GSO messages (issue 11): a run for one host of one length, the
/// last maybe shorter, within the kernel's limits; anything else starts a message of its own.
/// </summary>
public sealed unsafe class PacketBatchTests
{
    static readonly Native.SockAddrIn H1 = UdpEndpoint.SockAddr(Locator.Parse("198.18.0.1"), Wire.DefaultPort);
    static readonly Native.SockAddrIn H2 = UdpEndpoint.SockAddr(Locator.Parse("198.18.0.2"), Wire.DefaultPort);

    static int SegmentSize(PacketBatch b, int m)
    {
        var h = b.Msgs[m].Hdr;
        if (h.Control is null) return 0;
        var c = (Native.CMsgHdr*)h.Control;
        Assert.Equal((Native.SOL_UDP, Native.UDP_SEGMENT), (c->Level, c->Type));
        return *(ushort*)((byte*)c + Native.CMsgHdr.DataOffset);
    }

    [Fact]
    public void A_run_for_one_host_is_one_message_and_a_shorter_datagram_ends_it()
    {
        using var b = new PacketBatch(16) { UdpSegmentation = true };
        for (var i = 0; i < 3; i++) b.Append(i, b.Slot(i), 1472, H1);
        b.Append(3, b.Slot(3), 600, H1);  // the last of the run: shorter
        b.Append(4, b.Slot(4), 600, H1);  // after a shorter one: a new message
        b.Append(5, b.Slot(5), 1472, H2); // another host
        Assert.Equal(3, b.Messages);
        Assert.Equal(new[] { 4, 1, 1 }, new[] { b.Datagrams(0), b.Datagrams(1), b.Datagrams(2) });
        Assert.Equal(1472, SegmentSize(b, 0));
        Assert.Equal(0, SegmentSize(b, 1)); // one datagram: no control message
        Assert.True(b.Msgs[0].Hdr.Iov == &b.Iovs[0]);
        Assert.Equal(600u, (uint)b.Iovs[3].Len);
    }

    [Fact]
    public void A_longer_datagram_or_a_gap_starts_a_new_message()
    {
        using var b = new PacketBatch(16) { UdpSegmentation = true };
        b.Append(0, b.Slot(0), 1000, H1);
        b.Append(1, b.Slot(1), 1472, H1); // longer than the run's size
        b.Append(3, b.Slot(3), 1472, H1); // iovec 2 skipped (that packet was held or dropped)
        Assert.Equal(3, b.Messages);
    }

    [Fact]
    public void A_run_stops_at_the_kernels_limits()
    {
        using var b = new PacketBatch(64) { UdpSegmentation = true };
        // 65,507 bytes at most in one UDP GSO send: 44 datagrams of 1472 fit, the 45th starts a message.
        for (var i = 0; i < 45; i++) b.Append(i, b.Slot(i), 1472, H1);
        Assert.Equal(2, b.Messages);
        Assert.Equal(44, b.Datagrams(0));
        b.Clear();
        // At most 64 datagrams, however small.
        for (var i = 0; i < 64; i++) b.Append(i, b.Slot(i), 100, H1);
        Assert.Equal(1, b.Messages);
        Assert.Equal(64, b.Datagrams(0));
    }

    [Fact]
    public void Without_udp_segmentation_every_datagram_is_a_message()
    {
        using var b = new PacketBatch(8);
        for (var i = 0; i < 4; i++) b.Append(i, b.Slot(i), 1472, H1);
        Assert.Equal(4, b.Messages);
        Assert.All(Enumerable.Range(0, 4), m => Assert.Equal(0, SegmentSize(b, m)));
    }
}
