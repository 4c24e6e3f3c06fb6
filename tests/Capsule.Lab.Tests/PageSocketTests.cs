using System.Diagnostics;
using System.Net.Sockets;
using Capsule.Agent.Checkpoint;
using Capsule.Agent.Linux;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The page socket of a post-copy move reaches the one CRIU process it is handed to, and no other
/// child of the agent (a capsule started meanwhile would carry it, and CRIU could not move it later).
/// </summary>
public sealed class PageSocketTests
{
    static async Task<string[]> OpenDescriptors(int inherit)
    {
        var psi = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in (string[])["-c", "ls /proc/$$/fd"]) psi.ArgumentList.Add(a);
        using var p = Spawn.Start(psi, inherit);
        var output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    [Fact]
    public async Task Only_the_child_it_is_handed_to_inherits_CRIUs_end()
    {
        using var pages = new PageSocket();
        var fd = pages.Child.ToString();
        Assert.Contains(fd, await OpenDescriptors(pages.Child));
        Assert.DoesNotContain(fd, await OpenDescriptors(-1));
        // And after its start the agent's copy is close-on-exec again.
        Assert.DoesNotContain(fd, await OpenDescriptors(-1));
    }

    [Fact]
    public async Task Bytes_cross_the_pair_and_closing_CRIUs_end_is_the_end_of_the_stream()
    {
        using var pages = new PageSocket();
        using var criu = new Socket(new SafeSocketHandle(pages.Child, ownsHandle: false));
        await criu.SendAsync(new byte[] { 1, 2, 3 }, SocketFlags.None);
        var buffer = new byte[8];
        Assert.Equal(3, await pages.Agent.ReceiveAsync(buffer, SocketFlags.None));
        pages.CloseChild();
        Assert.Equal(0, await pages.Agent.ReceiveAsync(buffer, SocketFlags.None));
        Assert.Throws<ObjectDisposedException>(() => pages.Child);
    }
}
