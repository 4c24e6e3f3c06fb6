using Capsule.Protos;

namespace Capsule.Rpc;

/// <summary>
/// The words events and outcomes go by wherever they are printed or exported (`capsule events
/// --json`, metric labels, docs/observability.md), so a script sees one spelling everywhere.
/// </summary>
public static class EventNames
{
    public static string Kind(EventKind kind) => kind switch
    {
        EventKind.AgentStarted => "agent_started",
        EventKind.HostJoined => "host_joined",
        EventKind.HostLeft => "host_left",
        EventKind.CapsuleCreated => "capsule_created",
        EventKind.CapsuleRemoved => "capsule_removed",
        EventKind.MigrationStarted => "migration_started",
        EventKind.MigrationEnded => "migration_ended",
        EventKind.HoldTaken => "hold_taken",
        EventKind.HoldReleased => "hold_released",
        EventKind.HoldExpired => "hold_expired",
        EventKind.DrainStarted => "drain_started",
        EventKind.DrainEnded => "drain_ended",
        _ => "unknown",
    };

    public static string DrainState(DrainState state) => state switch
    {
        Protos.DrainState.Running => "running",
        Protos.DrainState.Stopping => "stopping",
        Protos.DrainState.Stopped => "stopped",
        Protos.DrainState.Done => "done",
        Protos.DrainState.Failed => "failed",
        _ => "none",
    };

    public static string Outcome(MigrationOutcome outcome) => outcome switch
    {
        MigrationOutcome.Ok => "ok",
        MigrationOutcome.ResumedOnSource => "resumed_on_source",
        MigrationOutcome.Failed => "failed",
        MigrationOutcome.Refused => "refused",
        _ => "",
    };

    public static readonly MigrationOutcome[] Outcomes =
        [MigrationOutcome.Ok, MigrationOutcome.ResumedOnSource, MigrationOutcome.Failed, MigrationOutcome.Refused];
}
