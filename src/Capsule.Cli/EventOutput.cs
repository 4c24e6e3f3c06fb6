using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Capsule.Protos;
using Capsule.Rpc;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>One event as `capsule events` prints it: a line for people, or one JSON object per line.</summary>
internal static class EventOutput
{
    static bool EndsSomething(EventKind k) =>
        k is EventKind.HoldReleased or EventKind.HoldExpired or EventKind.MigrationEnded;

    /// <summary>
    /// The event's fields under the names docs/observability.md gives; those that do not apply to its
    /// kind are left out.
    /// </summary>
    public static string Json(AgentEvent e)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("time", DateTimeOffset.FromUnixTimeMilliseconds(e.TimeUnixMs).UtcDateTime);
            w.WriteString("host", e.Host);
            w.WriteNumber("seq", e.Seq);
            w.WriteString("kind", EventNames.Kind(e.Kind));
            if (e.Capsule.Length > 0) w.WriteString("capsule", e.Capsule);
            if (e.Locator.Length > 0) w.WriteString("locator", e.Locator);
            if (e.Peer.Length > 0) w.WriteString("peer", e.Peer);
            if (e.Outcome != MigrationOutcome.Unspecified) w.WriteString("outcome", EventNames.Outcome(e.Outcome));
            if (e.Drain is not null) WriteDrain(w, e);
            if (e.Error.Length > 0) w.WriteString("error", e.Error);
            if (EndsSomething(e.Kind))
            {
                w.WriteNumber("flushed", e.Packets);
                w.WriteNumber("dropped", e.Dropped);
                w.WriteNumber("duration_ms", e.DurationMs);
            }
            else if (e.Packets > 0)
                w.WriteNumber("packets", e.Packets);
            if (e.Flows.Count > 0) WriteFlows(w, e);
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>A drain's start and end carry their own fields (see EventLog.DrainStarted and DrainEnded).</summary>
    static void WriteDrain(Utf8JsonWriter w, AgentEvent e)
    {
        var d = e.Drain;
        w.WriteNumber("capsules", d.Capsules);
        if (e.Kind != EventKind.DrainEnded) return;
        w.WriteString("state", EventNames.DrainState(d.State));
        w.WriteNumber("moved", d.Moved);
        w.WriteNumber("not_moved", d.NotMoved);
        w.WriteNumber("duration_ms", e.DurationMs);
    }

    /// <summary>A migration's per-connection report, as in `migrate --json` (FlowJson).</summary>
    static void WriteFlows(Utf8JsonWriter w, AgentEvent e)
    {
        w.WriteStartArray("flows");
        foreach (var f in e.Flows)
        {
            w.WriteStartObject();
            w.WriteString("protocol", f.Protocol);
            w.WriteString("local", f.Local);
            w.WriteString("peer", f.Peer);
            w.WriteString("state", f.State);
            w.WriteString("holder", f.Holder);
            w.WriteNumber("held", f.Held);
            w.WriteNumber("flushed", f.Flushed);
            w.WriteNumber("stall_ms", f.StallMs);
            w.WriteBoolean("paused", f.Paused);
            w.WriteBoolean("survived", f.Survived);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    public static void WriteJson(AgentEvent e) => Console.Out.WriteLine(Json(e));

    public static void WriteLine(AgentEvent e)
    {
        var at = DateTimeOffset.FromUnixTimeMilliseconds(e.TimeUnixMs).ToLocalTime();
        var time = at.Date == DateTimeOffset.Now.Date
            ? at.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture)
            : at.ToString("MM-dd HH:mm:ss.fff", CultureInfo.InvariantCulture);
        var (colour, text) = Describe(e);
        // Into a file or a pipe: one plain line per event, never wrapped at a guessed width.
        if (Console.IsOutputRedirected)
        {
            Console.Out.WriteLine($"{time} {e.Host,-4} {text}");
            return;
        }
        AnsiConsole.MarkupLine(
            $"[grey]{time}[/] [bold]{Markup.Escape(e.Host),-4}[/] [{colour}]{Markup.Escape(text)}[/]");
    }

    /// <summary>A sentence for the event, and the colour that says whether it went well.</summary>
    static (string Colour, string Text) Describe(AgentEvent e)
    {
        var capsule = e.Capsule.Length > 0 ? e.Capsule : e.Locator;
        var to = e.Peer.Length > 0 ? " to " + e.Peer : "";
        var error = e.Error.Length > 0 ? ": " + e.Error : "";
        return e.Kind switch
        {
            EventKind.AgentStarted => ("default", "agent started"),
            EventKind.HostJoined => ("default", $"host {e.Peer} joined"),
            EventKind.HostLeft => ("yellow", $"host {e.Peer} left"),
            EventKind.CapsuleCreated => ("default", $"capsule {capsule} created on {e.Peer} ({e.Locator})"),
            EventKind.CapsuleRemoved => ("default", $"capsule {capsule} removed (it was on {e.Peer})"),
            EventKind.MigrationStarted => ("blue", $"migration of {capsule}{to} started"),
            EventKind.MigrationEnded => e.Outcome switch
            {
                MigrationOutcome.Ok => ("green",
                    $"migration of {capsule}{to}: ok in {e.DurationMs} ms ({e.Packets} held packets flushed, " +
                    $"{e.Dropped} dropped){(e.Error.Length > 0 ? "; warning: " + e.Error : "")}"),
                MigrationOutcome.ResumedOnSource => ("yellow",
                    $"migration of {capsule}{to} failed, resumed on {e.Host}{error}"),
                MigrationOutcome.Refused => ("yellow", $"migration of {capsule}{to} refused{error}"),
                _ => ("red", $"migration of {capsule}{to} failed{error}"),
            },
            EventKind.HoldTaken => ("grey", e.Packets > 0
                ? $"took back the hold for {capsule} from the previous agent ({e.Packets} packets)"
                : $"holds the packets for {capsule} ({e.Locator}{(e.Peer.Length > 0 ? ", on " + e.Peer : "")})"),
            EventKind.HoldReleased => ("grey", $"hold for {capsule} released after {e.DurationMs} ms: {Ended(e)}"),
            EventKind.HoldExpired => ("yellow", $"hold for {capsule} expired after {e.DurationMs} ms: {Ended(e)}"),
            EventKind.DrainStarted => ("blue", $"drain of {e.Host} started: {e.Drain?.Capsules} capsules to move"),
            EventKind.DrainEnded => (e.Drain?.NotMoved == 0 ? "green" : "yellow",
                $"drain of {e.Host} {EventNames.DrainState(e.Drain?.State ?? DrainState.None)} after " +
                $"{e.DurationMs} ms: {e.Drain?.Moved} moved, {e.Drain?.NotMoved} not moved"),
            _ => ("default", $"event {e.Kind}"),
        };
    }

    static string Ended(AgentEvent e) =>
        e.Peer.Length > 0 ? $"{e.Packets} flushed to {e.Peer}, {e.Dropped} dropped"
        : e.Packets > 0 ? $"{e.Packets} flushed, {e.Dropped} dropped"
        : $"nowhere to flush, {e.Dropped} dropped";
}
