using Capsule.Agent.Checkpoint;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Agent.Migration;

internal sealed partial class MigrationSource
{
    /// <summary>One move in progress: what it concerns and how far it has come.</summary>
    sealed class Move(LocalCapsule capsule, MigrateRequest request, HostRecord target, HostAgent.HostAgentClient agent,
        string work, bool postCopy)
    {
        public LocalCapsule Capsule { get; } = capsule;
        public MigrateRequest Request { get; } = request;
        public HostRecord Target { get; } = target;
        public HostAgent.HostAgentClient TargetAgent { get; } = agent;
        public string Work { get; } = work;
        public string Images => Path.Combine(Work, "images");
        public PhaseClock Clock { get; } = new();
        public MigrateResult Result { get; } = new() { Times = new PhaseTimes() };
        public Task? Prepared { get; set; }
        public StagedFiles Staged { get; set; } = StagedFiles.None;
        public HoldSet? Holds { get; set; }
        public FrozenTree? Frozen { get; set; }
        public bool Switched { get; set; }
        public TransferMeter Meter { get; init; } = TransferMeter.None;

        // The report: the capsule's sockets before the sync, and what each holder had of its peers' packets.
        public IReadOnlyList<FlowReport> Sockets { get; set; } = [];
        public List<HolderReport> HeldAt { get; } = [];

        // CRIU's page socket and its relay: the pages as the dump writes them (stop-and-copy,
        // MigrationSource.Pages.cs), or served to the target's restore (post-copy, MigrationSource.PostCopy.cs).
        public PageSocket? Pages { get; set; }
        public AsyncDuplexStreamingCall<PageBytes, PageBytes>? PagesCall { get; set; }
        public CancellationTokenSource PagesCancel { get; } = new();

        // Stop-and-copy.
        public Task<SentPages>? PagesSent { get; set; }
        public SentPages Sent { get; set; }

        // Post-copy.
        public bool PostCopy { get; } = postCopy;
        public Task<PostCopyEnd?>? TailEnd { get; set; }
        /// <summary>Bytes of pages relayed to the target: what shows that the tail still moves.</summary>
        public long RelayedBytes;
        /// <summary>The target's restore began and the dump was told to commit: from here a failure loses it.</summary>
        public bool Committed { get; set; }
        public string? TailFailure { get; set; }

        public MoveRecord Record(MoveStep step, Locator[] holders) =>
            new(MoveKind.Migrate, Capsule.Name, Capsule.Locator, Target.Name, step, holders, Images, Capsule.Pid);
    }
}
