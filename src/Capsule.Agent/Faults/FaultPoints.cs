namespace Capsule.Agent.Faults;

/// <summary>
/// The named places where a test or benchmark can make the agent fail, crash, wait or skip a
/// step. Each name says which side of a migration it is on and where in it.
/// </summary>
public static class FaultPoints
{
    /// <summary>Source: peers hold, the cut is agreed, nothing is frozen yet.</summary>
    public const string SourceAfterSync = "source.after-sync";
    /// <summary>Source: just before CRIU freezes and dumps the tree.</summary>
    public const string SourceDump = "source.dump";
    /// <summary>Source: the tree is dumped (and left stopped), nothing sent yet.</summary>
    public const string SourceAfterDump = "source.after-dump";
    /// <summary>Source: the first chunk of the image has been sent (corrupt flips a byte of it).</summary>
    public const string SourceTransfer = "source.transfer";
    /// <summary>Source: the target runs the capsule; the directory does not say so yet.</summary>
    public const string SourceBeforeSwitch = "source.before-switch";
    /// <summary>Target: the capsule's files sent ahead of the freeze are here and checked; not yet answered.</summary>
    public const string TargetStage = "target.stage";
    /// <summary>Target, stop-and-copy: the first of the memory pages the dump streams has arrived.</summary>
    public const string TargetPages = "target.pages";
    /// <summary>Target: the first chunk of the image has arrived.</summary>
    public const string TargetTransfer = "target.transfer";
    /// <summary>Target: the image is whole and checked; CRIU has not started.</summary>
    public const string TargetRestore = "target.restore";
    /// <summary>Target: the capsule runs here; the source has not been told.</summary>
    public const string TargetAfterRestore = "target.after-restore";
    /// <summary>Source, post-copy: switched and flushed; the target has not said it has every page.</summary>
    public const string SourcePostCopyTail = "source.post-copy-tail";
    /// <summary>
    /// Source, post-copy: a chunk of memory is about to go to the target's lazy-pages daemon (delay lengthens the
    /// tail, so that a fault in it meets pages still to come).
    /// </summary>
    public const string SourcePostCopyPages = "source.post-copy-pages";
    /// <summary>Target, post-copy: the capsule runs here, restored before its memory came.</summary>
    public const string TargetPostCopyTail = "target.post-copy-tail";
    /// <summary>Source, skip: no peer is asked to hold (a benchmark's comparison run).</summary>
    public const string NoHold = "migration.no-hold";
    /// <summary>Holder, skip: hold, but do not pause ordinary TCP peers (a benchmark's comparison run).</summary>
    public const string NoPause = "holder.no-pause";

    public static readonly string[] All =
    [
        SourceAfterSync, SourceDump, SourceAfterDump, SourceTransfer, SourceBeforeSwitch,
        TargetStage, TargetPages, TargetTransfer, TargetRestore, TargetAfterRestore,
        SourcePostCopyTail, SourcePostCopyPages, TargetPostCopyTail,
        NoHold, NoPause,
    ];
}
