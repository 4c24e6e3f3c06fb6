using System.Runtime.InteropServices;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// The libc calls behind namespace and link set-up without a process per step: netlink sockets,
/// unshare/setns on one thread, and the bind mount that names a network namespace (what `ip netns add` does).
/// </summary>
public static unsafe partial class Native
{
    public const int AF_NETLINK = 16, NETLINK_ROUTE = 0;
    public const int CLONE_NEWNET = 0x40000000;
    public const ulong MS_BIND = 0x1000, MS_REC = 0x4000, MS_SHARED = 1 << 20;
    public const int MNT_DETACH = 2;
    public const int EEXIST = 17, EINVAL = 22, ENOENT = 2, ENODEV = 19, ESRCH = 3, EADDRNOTAVAIL = 99;
    const int AT_FDCWD = -100;
    const uint STATX_INO = 0x100;

    [LibraryImport(Libc, SetLastError = true)]
    public static partial nint send(int fd, void* buf, nuint len, int flags);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial nint recv(int fd, void* buf, nuint len, int flags);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int unshare(int flags);

    [LibraryImport(Libc, SetLastError = true)]
    public static partial int setns(int fd, int nstype);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string source, string target, string? fstype, ulong flags, void* data);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport(Libc, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirfd, string path, int flags, uint mask, byte* buf);

    /// <summary>A failed plumbing call as the error people see: what was asked, and the kernel's answer.</summary>
    public static CommandFailedException Failed(string what, int errno) => new($"{what} failed: {Describe(errno)}");

    /// <summary>
    /// The inode number of a file, or 0 when it cannot be read. statx, not stat: its layout is the same on
    /// every architecture (stx_ino at byte 32).
    /// </summary>
    public static ulong Inode(string path)
    {
        var buf = stackalloc byte[256];
        return statx(AT_FDCWD, path, 0, STATX_INO, buf) == 0 ? *(ulong*)(buf + 32) : 0;
    }
}
