using System.Diagnostics;
using Capsule.Rpc;

namespace Capsule.Agent.Linux;

/// <summary>
/// native/capsule-launch.c, built by scripts/setup.sh: what .NET cannot do safely itself (it cannot
/// fork and then call into the kernel before exec) to give a capsule its own user and mount
/// namespaces: the id-mapped overlay of its root, and its first process in new namespaces that
/// waits until the agent has configured its network.
/// </summary>
public static class Launcher
{
    public const string DefaultBinary = "/opt/capsule/bin/capsule-launch";

    internal static void Check()
    {
        if (!File.Exists(DefaultBinary))
            throw new InvalidOperationException($"the capsule launcher is not installed at {DefaultBinary}; " +
                "run scripts/setup.sh (./capsule does it)");
    }

    /// <summary>Mounts the capsule's root (<see cref="RootMounts.Merged"/>); already mounted is fine.</summary>
    internal static async Task MountAsync(OwnRoot root, string upper, RootMounts at, CancellationToken ct)
    {
        Check();
        var r = await Cmd.TryRunAsync(DefaultBinary, ["rootfs", "--lower", root.Lower, "--upper", upper,
            "--work", at.Work, "--lowermnt", at.Lower, "--root", at.Merged,
            "--uid", root.IdBase.ToString(), "--count", root.IdCount.ToString()], ct);
        if (!r.Ok) throw new InvalidOperationException($"could not mount the capsule's root: {r.Stderr.Trim()}");
    }

    /// <summary>Unmounts it and removes the folder; safe when nothing is mounted.</summary>
    internal static async Task UnmountAsync(RootMounts at)
    {
        if (!Directory.Exists(at.Folder)) return;
        if (File.Exists(DefaultBinary))
            await Cmd.TryRunAsync(DefaultBinary, ["unmount", "--lowermnt", at.Lower, "--root", at.Merged]);
        // The work folder holds overlayfs's own entries (a folder of mode 000): removed as a whole.
        try { Directory.Delete(at.Folder, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// Starts the capsule's first process in its new namespaces; it waits (the launcher holds it)
    /// until <paramref name="configure"/> has built its network from outside, by its host pid.
    /// </summary>
    /// <param name="masked">Folders of the lower layer it must not read (<see cref="HostSecrets"/>).</param>
    internal static async Task<CapsuleProcess.Started> RunAsync(OwnRoot root, RootMounts at, string name,
        IReadOnlyList<string> command, IEnumerable<string> masked, Func<int, Task> configure, CancellationToken ct)
    {
        Check();
        var psi = new ProcessStartInfo(DefaultBinary)
        {
            UseShellExecute = false, RedirectStandardInput = true, RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        // A container's usual environment, not the agent's (its settings, its .NET variables).
        psi.Environment.Clear();
        psi.Environment["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        psi.Environment["HOME"] = "/root";
        foreach (var a in (string[])["run", "--root", at.Merged, "--hostname", name,
                     "--uid", root.IdBase.ToString(), "--count", root.IdCount.ToString(),
                     "--stdout", OwnRoot.StdoutInside, "--stderr", OwnRoot.StderrInside, "--cwd", "/",
                     "--caps", "oci", .. masked.SelectMany(m => (string[])["--mask", m]), "--"])
            psi.ArgumentList.Add(a);
        foreach (var a in command) psi.ArgumentList.Add(a);
        var launcher = Spawn.Start(psi);
        var errors = launcher.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            var line = await launcher.StandardOutput.ReadLineAsync(ct).AsTask()
                .WaitAsync(TimeSpan.FromSeconds(10), ct);
            if (line is null || !int.TryParse(line, out var pid))
            {
                await launcher.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(5), ct);
                throw new InvalidOperationException($"the capsule's launcher failed: {(await errors).Trim()}");
            }
            await configure(pid);
            await launcher.StandardInput.WriteLineAsync("go".AsMemory(), ct);
            await launcher.StandardInput.FlushAsync(ct);
            launcher.StandardInput.Close();
            return new CapsuleProcess.Started(pid, launcher);
        }
        catch
        {
            try { launcher.Kill(entireProcessTree: true); }
            catch (InvalidOperationException) { }
            throw;
        }
    }
}
