namespace Capsule.Agent.Checkpoint;

/// <summary>
/// The script CRIU runs at its action points (criu --action-script). Two of them matter:
/// post-dump, where a dump waits for the agent's verdict with the tree frozen and its images
/// complete (commit: CRIU ends the tree with its sockets still in repair mode, so the peers see
/// nothing; anything else: CRIU takes the sockets out of repair mode and resumes the tree, which
/// a plain SIGCONT after --leave-stopped would not do); and network-unlock during a restore,
/// where it lifts the loopback lock of <see cref="Criu.LockForRestoreAsync"/>.
/// </summary>
internal sealed class CriuHook
{
    public const string LockTable = "capsule_restore_lock";
    public const string LockVariable = "CAPSULE_RESTORE_LOCK";
    public const string UnlockedVariable = "CAPSULE_RESTORE_UNLOCKED";
    /// <summary>Set to a file of <see cref="LockRules"/>: the hook locks the namespace CRIU restores itself.</summary>
    public const string LockNewVariable = "CAPSULE_RESTORE_LOCK_NEW";

    /// <summary>
    /// The loopback lock of <see cref="Criu.LockForRestoreAsync"/>: only CRIU's own packets (mark 0xC114).
    /// </summary>
    public const string LockRules = $$"""
        table inet {{LockTable}} {
          chain output { type filter hook output priority 0; policy drop; meta mark 0xc114 accept; }
          chain input { type filter hook input priority 0; policy drop; meta mark 0xc114 accept; }
        }
        """;

    /// <summary>
    /// With no verdict in this long, the tree resumes where it is: a source agent that never comes
    /// back must not leave its capsule frozen for ever. (A restarted agent gives the verdict.)
    /// </summary>
    public const int VerdictTimeoutSeconds = 120;

    // Every other action must exit 0, or CRIU aborts the dump or restore.
    static readonly string Script = $$"""
        #!/bin/sh
        # Written by the Capsule agent; see src/Capsule.Agent/Checkpoint/CriuHook.cs.
        case "$CRTOOLS_SCRIPT_ACTION" in
        post-dump)
          [ -n "$CAPSULE_VERDICT" ] || exit 0
          # Held open read-write first, so a verdict written at any moment from now on is kept.
          exec 3<>"$CAPSULE_VERDICT"
          : > "$CAPSULE_VERDICT.ready"
          v=$(timeout {{VerdictTimeoutSeconds}} head -n 1 <&3)
          echo "verdict: ${v:-none}" >> "$CAPSULE_VERDICT.out"
          [ "$v" = commit ] && exit 0
          exit 1
          ;;
        post-setup-namespaces)
          # A capsule with its own user namespace: CRIU made its network namespace just now, from the
          # image; no packet moves in it but CRIU's own until network-unlock, as with the lock above.
          [ -n "$CAPSULE_RESTORE_LOCK_NEW" ] || exit 0
          nsenter --net=/proc/$CRTOOLS_INIT_PID/ns/net nft -f "$CAPSULE_RESTORE_LOCK_NEW" || exit 1
          ;;
        network-unlock)
          [ -n "$CAPSULE_RESTORE_LOCK" ] || exit 0
          [ -n "$CRTOOLS_INIT_PID" ] || exit 0
          nsenter --net=/proc/$CRTOOLS_INIT_PID/ns/net nft delete table inet "$CAPSULE_RESTORE_LOCK" &&
            [ -n "$CAPSULE_RESTORE_UNLOCKED" ] && : > "$CAPSULE_RESTORE_UNLOCKED"
          ;;
        esac
        exit 0

        """;

    public CriuHook(string folder)
    {
        Directory.CreateDirectory(folder);
        Path = System.IO.Path.Combine(folder, "criu-hook.sh");
        File.WriteAllText(Path, Script);
        LockRulesPath = System.IO.Path.Combine(folder, "criu-lock.nft");
        File.WriteAllText(LockRulesPath, LockRules);
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public string Path { get; }
    public string LockRulesPath { get; }
}
