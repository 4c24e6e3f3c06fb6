namespace Capsule.Rpc;

/// <summary>
/// Files and folders the agent and the CLI make from images and suspend files: readable by their
/// owner alone, with the mode given when they are created (a chmod afterwards leaves a moment in
/// which another user may open them, and keeps what they opened).
/// </summary>
public static class PrivateFiles
{
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    public const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <summary>A new file, 0600 (or <paramref name="mode"/>) from its creation; fails if it exists.</summary>
    public static FileStream CreateNew(string path, UnixFileMode mode = FileMode)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("Capsule runs on Linux");
        var fs = new FileStream(path, new FileStreamOptions
        {
            Mode = System.IO.FileMode.CreateNew,
            Access = FileAccess.Write,
            Share = FileShare.None,
            UnixCreateMode = mode,
        });
        // The umask only takes bits away, so the file was never more open than asked; a mode it narrowed
        // (0666 to 0644) is given back exactly, on the handle: CRIU restores a file only with its own mode.
        if (File.GetUnixFileMode(fs.SafeFileHandle) != mode) File.SetUnixFileMode(fs.SafeFileHandle, mode);
        return fs;
    }

    /// <summary>A folder (and its missing parents), 0700 (or <paramref name="mode"/>) when this makes it.</summary>
    public static DirectoryInfo CreateFolder(string path, UnixFileMode mode = FolderMode)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("Capsule runs on Linux");
        var existed = Directory.Exists(path);
        var d = Directory.CreateDirectory(path, mode);
        if (!existed && d.UnixFileMode != mode) d.UnixFileMode = mode; // narrowed by the umask only (see CreateNew)
        return d;
    }

    /// <summary>Gives <paramref name="path"/> exactly <paramref name="mode"/> (what a umask took away).</summary>
    public static void SetMode(string path, UnixFileMode mode)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("Capsule runs on Linux");
        File.SetUnixFileMode(path, mode);
    }
}
