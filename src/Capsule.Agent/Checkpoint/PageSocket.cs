using System.Net.Sockets;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Checkpoint;

/// <summary>
/// A connected pair of Unix stream sockets for CRIU's page traffic in a post-copy move: one end is
/// handed to a CRIU process (`--ps-socket N`: the source's dump serves pages on it, the target's
/// lazy-pages daemon asks for them on it), the other is the agent's, which relays the bytes to the
/// other host over the agents' authenticated channel. So CRIU never listens on a port, and no one
/// but the two agents can reach the pages.
/// </summary>
internal sealed unsafe class PageSocket : IDisposable
{
    int _child;

    /// <summary>Most bytes either end queues for the other when the pair carries a stream of pages one way.</summary>
    const int BulkBuffer = 4 << 20;

    /// <param name="bulk">
    /// The pages of a whole dump go one way (stop-and-copy): deep buffers let CRIU, the relay and the page server
    /// work at once. Not for post-copy, where a page the capsule faults on would queue behind that much push.
    /// </param>
    public PageSocket(bool bulk = false)
    {
        var sv = stackalloc int[2];
        Native.ThrowIfFailed(Native.socketpair(Native.AF_UNIX, Native.SOCK_STREAM | Native.SOCK_CLOEXEC, 0, sv),
            "socketpair");
        if (bulk)
        {
            var size = BulkBuffer;
            // At most net.core.wmem_max: the kernel caps it, and a smaller buffer only costs speed.
            for (var i = 0; i < 2; i++)
                Native.setsockopt(sv[i], Native.SOL_SOCKET, Native.SO_SNDBUF, &size, sizeof(int));
        }
        Agent = new Socket(new SafeSocketHandle(sv[0], ownsHandle: true));
        _child = sv[1];
    }

    /// <summary>The agent's end.</summary>
    public Socket Agent { get; }

    /// <summary>CRIU's end, until <see cref="CloseChild"/>: the number to pass as --ps-socket.</summary>
    public int Child => _child >= 0 ? _child : throw new ObjectDisposedException(nameof(PageSocket));

    /// <summary>
    /// Once CRIU has its copy: the agent's copy of CRIU's end goes, so that CRIU's exit shows here as
    /// the end of the stream.
    /// </summary>
    public void CloseChild()
    {
        var fd = Interlocked.Exchange(ref _child, -1);
        if (fd >= 0) Native.close(fd);
    }

    public void Dispose()
    {
        CloseChild();
        Agent.Dispose();
    }
}
