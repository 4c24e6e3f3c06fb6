using Capsule.Core;

namespace Capsule.Agent.Linux;

/// <summary>
/// A container capsule's own /etc/resolv.conf and /etc/hosts, written into its new upper layer before its first
/// start: its resolver asks its agent with the cluster domain in its search list (so `web` resolves), and its
/// hostname (its name) resolves to its locator without asking anyone. In the upper layer they travel with the
/// capsule and are its to change, like any file it writes; the agent writes them once, never over its edits.
/// </summary>
internal static class CapsuleNames
{
    const uint FileMode = 0x1A4; // 0644

    public static void Seed(OwnRoot root, string upper, string name, Locator locator)
    {
        if (!Directory.Exists(upper)) HostSecrets.MakeFolderLike(root, upper, root.Lower);
        var etc = Path.Combine(upper, "etc");
        var lowerEtc = Path.Join(root.Lower, "etc");
        if (!Directory.Exists(etc))
        {
            if (Directory.Exists(lowerEtc)) HostSecrets.MakeFolderLike(root, etc, lowerEtc);
            else
            {
                Directory.CreateDirectory(etc);
                HostSecrets.Chown(etc, root.IdBase, root.IdBase);
            }
        }
        var domain = CapsuleDns.DefaultDomain;
        Write(root, Path.Combine(etc, "resolv.conf"),
            $"nameserver {HostNetwork.CapsuleGateway}\nsearch {domain}\noptions timeout:1 attempts:2\n");
        Write(root, Path.Combine(etc, "hosts"),
            $"127.0.0.1\tlocalhost\n{locator}\t{name}.{domain} {name}\n");
    }

    static void Write(OwnRoot root, string path, string text)
    {
        // Over the lower layer's file, which may be a link (to systemd-resolved's, say): ours is a plain file.
        File.Delete(path);
        File.WriteAllText(path, text);
        HostSecrets.Chown(path, root.IdBase, root.IdBase);
        Native.ThrowIfFailed(Native.chmod(path, FileMode), $"set the mode of {path}");
    }
}
