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

    /// <summary>A new file, 0600 from its creation; fails if <paramref name="path"/> exists.</summary>
    public static FileStream CreateNew(string path)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("Capsule runs on Linux");
        return new(path, new FileStreamOptions
        {
            Mode = System.IO.FileMode.CreateNew,
            Access = FileAccess.Write,
            Share = FileShare.None,
            UnixCreateMode = FileMode,
        });
    }

    /// <summary>A folder (and its missing parents), 0700 when this makes it.</summary>
    public static DirectoryInfo CreateFolder(string path)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("Capsule runs on Linux");
        return Directory.CreateDirectory(path, FolderMode);
    }
}
