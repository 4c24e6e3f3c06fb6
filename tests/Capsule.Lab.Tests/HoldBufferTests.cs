using Capsule.Agent.DataPlane;
using Capsule.Core;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The hold buffer's spool file: what a hold keeps is found again, in order, by the next agent;
/// a file that is not a whole spool is refused with its reason. No lab: files in a temporary folder.
/// </summary>
public sealed unsafe class HoldBufferTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("capsule-spool-").FullName;
    static readonly Locator Capsule = Locator.Parse("10.77.0.9");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>An IPv4-looking packet (protocol TCP) of <paramref name="length"/> bytes, every byte tagged.</summary>
    static byte[] Packet(int length, byte tag)
    {
        var p = Enumerable.Repeat(tag, length).ToArray();
        p[9] = 6;
        return p;
    }

    static byte[] At(HoldBuffer b, int i) => new ReadOnlySpan<byte>(b.Slot(i) + Wire.HeaderSize, b.Length(i)).ToArray();

    [Fact]
    public void A_spool_left_behind_gives_back_every_packet_in_order_across_the_ring_wrap()
    {
        var path = Path.Combine(_dir, "a.hold");
        var sent = new List<byte[]>();
        using (var first = HoldBuffer.Create(path, Capsule, capacity: 8, dropUdp: true))
        {
            for (var i = 0; i < 6; i++)
                Assert.True(first.TryAdd(Packet(100 + i * 200, (byte)i)));
            first.RemoveFirst(4); // a drain sent four
            for (var i = 6; i < 12; i++)
                Assert.True(first.TryAdd(Packet(100 + i * 100, (byte)i)));
            Assert.False(first.TryAdd(Packet(60, 99))); // full: refused, nothing overwritten
            for (var i = 0; i < first.Count; i++) sent.Add(At(first, i));
            first.Detach(); // the agent goes away; its spool stays
        }
        Assert.True(File.Exists(path));
        var again = HoldBuffer.Open(path, out var problem);
        Assert.NotNull(again);
        Assert.Null(problem);
        using (again)
        {
            Assert.Equal(Capsule, again.Locator);
            Assert.True(again.DropUdp);
            Assert.Equal(8, again.Count);
            for (var i = 0; i < again.Count; i++) Assert.Equal(sent[i], At(again, i));
            Assert.Equal((byte)4, At(again, 0)[0]);
            Assert.Equal((byte)11, At(again, 7)[0]);
        }
        Assert.False(File.Exists(path)); // the hold ended: its spool is gone
    }

    [Fact]
    public void Files_that_are_not_whole_spools_are_refused_with_a_reason()
    {
        var path = Path.Combine(_dir, "b.hold");
        File.WriteAllBytes(path, new byte[10]);
        Assert.Null(HoldBuffer.Open(path, out var shortProblem));
        Assert.Contains("shorter", shortProblem);

        File.WriteAllBytes(path, new byte[8192]);
        Assert.Null(HoldBuffer.Open(path, out var magicProblem));
        Assert.Contains("not a hold spool", magicProblem);

        using (var b = HoldBuffer.Create(path, Capsule, capacity: 4, dropUdp: false))
        {
            Assert.True(b.TryAdd(Packet(80, 1)));
            b.Detach();
        }
        using (var f = new FileStream(path, FileMode.Open)) f.SetLength(f.Length - 1);
        Assert.Null(HoldBuffer.Open(path, out var sizeProblem));
        Assert.Contains("does not fit", sizeProblem);
    }

    [Fact]
    public void A_buffer_in_memory_holds_the_same_way_and_leaves_no_file()
    {
        using var b = new HoldBuffer(capacity: 2, dropUdp: true, Capsule);
        var udp = Packet(50, 7);
        udp[9] = 17;
        Assert.False(b.TryAdd(udp)); // the policy drops UDP while the capsule moves
        b.Draining = true;
        Assert.True(b.TryAdd(udp)); // not once it drains
        Assert.True(b.TryAdd(Packet(70, 8)));
        Assert.Equal(2, b.Count);
        Assert.Equal(1, b.Dropped);
        Assert.Null(b.SpoolPath);
        Assert.Empty(Directory.EnumerateFiles(_dir));
    }
}
