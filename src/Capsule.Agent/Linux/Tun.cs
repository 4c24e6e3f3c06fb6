using System.Text;

namespace Capsule.Agent.Linux;

/// <summary>A TUN device owned by the agent: the kernel routes non-local capsule traffic into it.</summary>
internal sealed unsafe class Tun : IDisposable
{
    public int Fd { get; private set; }
    public string Name { get; }

    Tun(int fd, string name)
    {
        Fd = fd;
        Name = name;
    }

    /// <summary>
    /// Creates (or attaches to) TUN <paramref name="name"/> in the calling thread's network namespace.
    /// </summary>
    public static Tun Open(string name)
    {
        var fd = Native.open("/dev/net/tun", Native.O_RDWR | Native.O_NONBLOCK | Native.O_CLOEXEC);
        Native.ThrowIfFailed(fd, "open /dev/net/tun (is the tun module available? see `capsule doctor`)");
        var req = new Native.IfReq { Flags = Native.IFF_TUN | Native.IFF_NO_PI };
        var bytes = Encoding.ASCII.GetBytes(name);
        if (bytes.Length > 15) throw new ArgumentException($"interface name '{name}' is longer than 15 characters");
        for (var i = 0; i < bytes.Length; i++) req.Name[i] = bytes[i];
        if (Native.ioctl(fd, Native.TUNSETIFF, &req) < 0)
        {
            var e = Native.Errno;
            Native.close(fd);
            Native.Throw($"TUNSETIFF {name}", e);
        }
        return new Tun(fd, name);
    }

    public void Dispose()
    {
        if (Fd >= 0)
        {
            Native.close(Fd);
            Fd = -1;
        }
    }
}
