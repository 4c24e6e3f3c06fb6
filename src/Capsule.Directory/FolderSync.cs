using System.Runtime.InteropServices;

namespace Capsule.Dir;

/// <summary>
/// Makes a folder's entries durable (the embedded directory's state file). Its own few libc calls, not the
/// agent's Linux plumbing: the directory does not depend on the agent.
/// </summary>
internal static partial class FolderSync
{
    const string Libc = "libc";
    const int O_RDONLY = 0, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000;

    [LibraryImport(Libc, StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int open(string path, int flags);

    [LibraryImport(Libc, SetLastError = true)]
    private static partial int fsync(int fd);

    [LibraryImport(Libc)]
    private static partial int close(int fd);

    /// <summary>
    /// Makes a folder's entries durable: after a rename, the new name is on disk only once the folder
    /// itself is synced. .NET cannot open a folder (File.OpenHandle refuses directories on Linux), hence libc.
    /// </summary>
    public static void FsyncFolder(string path)
    {
        var fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        ThrowIfFailed(fd, $"open folder {path}");
        try { ThrowIfFailed(fsync(fd), $"fsync folder {path}"); }
        finally { close(fd); }
    }

    static void ThrowIfFailed(int rc, string what)
    {
        if (rc < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"{what}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
    }
}
