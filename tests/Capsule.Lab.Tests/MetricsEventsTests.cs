using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// Observability: each agent's Prometheus metrics, read with curl from inside the lab (the agents
/// serve them on their underlay addresses), and `capsule events`, across a live migration.
/// </summary>
[Collection("lab")]
public sealed class MetricsEventsTests(LabFixture lab)
{
    static string[] Stream(params string[] args) => ["python3", LabFixture.Tool("stream.py"), .. args];

    /// <summary>Host hN's /metrics, fetched from host <paramref name="from"/> over the lab's underlay.</summary>
    async Task<string> Scrape(string from, int host)
    {
        var url = $"http://{LabPaths.UnderlaySubnet}.{host}:{LabRunner.MetricsPort}/metrics";
        return (await lab.OnHost(from, "curl", "-sSf", "--max-time", "10", url)).Ok().Out;
    }

    /// <summary>
    /// The value of the sample of <paramref name="name"/> whose labels include all of <paramref name="labels"/>.
    /// </summary>
    static double? Sample(string metrics, string name, params string[] labels)
    {
        foreach (var line in metrics.Split('\n'))
            if (line.StartsWith(name + "{", StringComparison.Ordinal) && labels.All(line.Contains))
                return double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        return null;
    }

    static double Value(string metrics, string name, params string[] labels) =>
        Sample(metrics, name, labels) ?? throw new Xunit.Sdk.XunitException(
            $"no sample {name} with {string.Join(',', labels)} in:\n{metrics}");

    async Task<List<JsonElement>> Events()
    {
        var r = (await lab.Run("events", "--json")).Ok();
        return r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
    }

    static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) ? v.GetString() : null;

    static bool Is(JsonElement e, string kind, string capsule, string host) =>
        Str(e, "kind") == kind && Str(e, "capsule") == capsule && Str(e, "host") == host;

    static bool Is(List<JsonElement> events, string kind, string host) =>
        events.Any(e => Is(e, kind, "evsrv", host));

    [Fact]
    public async Task A_migration_shows_in_the_source_agents_metrics_and_in_capsule_events()
    {
        var (srv, _) = await lab.Create("evsrv", "h2", Stream("server", "7300"));
        await lab.WaitForLog("evsrv", "LISTENING");
        await lab.Create("evcli", "h1", Stream("client", srv, "7300", "60"));
        try
        {
            await lab.WaitForLog("evcli", "PROGRESS sent=");
            var before = await Scrape("h1", 2);
            Assert.Contains("host=\"h2\"", before);
            var okBefore = Value(before, "capsule_migrations_total", "outcome=\"ok\"");
            var refusedBefore = Value(await Scrape("h1", 3), "capsule_migrations_total", "outcome=\"refused\"");
            var totalsBefore = Sample(before, "capsule_migration_phase_seconds_count", "phase=\"total\"") ?? 0;

            var moved = await lab.Migrate("evsrv", "h3");
            Assert.True(moved.GetProperty("ok").GetBoolean(), moved.ToString());
            // Refused (no such host) by the agent asked: the one the capsule is on now.
            Assert.Equal(1, (await lab.Run("migrate", "evsrv", "--to", "h9")).Code);
            await lab.WaitForProgress("evcli", 100_000); // the stream goes on, now from h1 to h3

            // (a) The source (h2) counted the move and its phases, h3 the refusal; the data plane counts traffic.
            var after = await Scrape("h3", 2);
            Assert.Equal(okBefore + 1, Value(after, "capsule_migrations_total", "outcome=\"ok\""));
            var refusedAfter = Value(await Scrape("h1", 3), "capsule_migrations_total", "outcome=\"refused\"");
            Assert.Equal(refusedBefore + 1, refusedAfter);
            foreach (var phase in new[] { "total", "dump", "restore", "sync", "flush" })
                Assert.Equal(totalsBefore + 1,
                    Value(after, "capsule_migration_phase_seconds_count", $"phase=\"{phase}\""));
            Assert.True(Value(after, "capsule_migration_phase_seconds_sum", "phase=\"total\"") > 0);
            var client = await Scrape("h1", 1);
            foreach (var direction in new[] { "egress", "ingress" })
            {
                Assert.True(Value(client, "capsule_dataplane_packets_total", $"direction=\"{direction}\"") > 0);
                Assert.True(Value(client, "capsule_dataplane_bytes_total", $"direction=\"{direction}\"") > 0);
            }
            Assert.True(Value(client, "capsule_translation_table_routes") >= 1);
            Assert.NotNull(Sample(client, "capsule_dataplane_drops_total", "reason=\"no_route\"",
                "direction=\"egress\""));
            // Holds: h1 held the server's packets while it moved, and holds nothing now.
            await LabFixture.Until(async () => Value(await Scrape("h1", 1), "capsule_holds_active") == 0,
                "h1 to hold nothing once the move is over");
            Assert.NotNull(Sample(client, "capsule_holds_held_packets_total"));
            // The metrics port serves the metrics and nothing else.
            var other = await lab.OnHost("h1", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                $"http://{LabPaths.UnderlaySubnet}.2:{LabRunner.MetricsPort}/");
            Assert.Equal("404", other.Ok().Out.Trim());

            // (b) capsule events: the start and outcome (recorded by the source), and the holds of
            // h2 (its own) and h1 (a peer), each taken and released towards h3.
            List<JsonElement> events = [];
            await LabFixture.Until(async () =>
            {
                events = await Events();
                return Is(events, "hold_released", "h1") && Is(events, "hold_released", "h2");
            }, "both holds' releases in capsule events");
            var started = Assert.Single(events, e => Is(e, "migration_started", "evsrv", "h2"));
            Assert.Equal("h3", Str(started, "peer"));
            var ok = Assert.Single(events, e => Is(e, "migration_ended", "evsrv", "h2"));
            Assert.Equal("ok", Str(ok, "outcome"));
            Assert.Equal("h3", Str(ok, "peer"));
            Assert.True(ok.GetProperty("duration_ms").GetInt64() > 0);
            var refused = Assert.Single(events, e => Is(e, "migration_ended", "evsrv", "h3"));
            Assert.Equal("refused", Str(refused, "outcome"));
            Assert.Equal("h9", Str(refused, "peer"));
            Assert.Contains("no host named 'h9'", Str(refused, "error"));
            Assert.Single(events, e => Is(e, "capsule_created", "evsrv", "h2"));
            foreach (var holder in new[] { "h1", "h2" })
            {
                var taken = Assert.Single(events, e => Is(e, "hold_taken", "evsrv", holder));
                Assert.Equal("h2", Str(taken, "peer"));
                Assert.Equal(srv, Str(taken, "locator"));
                var released = Assert.Single(events, e => Is(e, "hold_released", "evsrv", holder));
                Assert.Equal("h3", Str(released, "peer"));
                Assert.True(released.GetProperty("dropped").GetInt64() == 0, released.ToString());
                Assert.True(Time(taken) >= Time(started) && Time(released) <= Time(ok).AddSeconds(1));
            }
            Assert.True(Time(started) <= Time(ok));
            // Merged by time across hosts.
            var times = events.Select(Time).ToList();
            Assert.Equal(times.Order(), times);
            // And for people.
            var text = (await lab.Run("events")).Ok().Out;
            Assert.Contains("migration of evsrv to h3: ok", text);
            Assert.Contains("migration of evsrv to h9 refused", text);
            Assert.Contains("hold for evsrv released", text);
        }
        finally
        {
            await lab.Run("rm", "evcli");
            await lab.Run("rm", "evsrv");
        }
    }

    static DateTimeOffset Time(JsonElement e) => e.GetProperty("time").GetDateTimeOffset();

    [Fact]
    public async Task Events_follow_prints_new_events_as_they_happen_until_stopped()
    {
        var psi = new ProcessStartInfo(Cli.Binary)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in new[] { "--lab", lab.Name, "events", "--follow", "--json" }) psi.ArgumentList.Add(a);
        using var follow = Process.Start(psi)!;
        var lines = new ConcurrentQueue<string>();
        follow.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { Length: > 0 } l) lines.Enqueue(l);
        };
        follow.BeginOutputReadLine();
        var stderr = follow.StandardError.ReadToEndAsync();
        bool Printed(string kind, string capsule) => lines.Select(l => JsonDocument.Parse(l).RootElement)
            .Any(e => Str(e, "kind") == kind && Str(e, "capsule") == capsule);
        try
        {
            // Every agent's start is in the history it prints first.
            await LabFixture.Until(() => Task.FromResult(lines.Count(l => l.Contains("\"agent_started\"")) >= 3),
                "the history's agent starts");
            await lab.Create("evfol", "h1", "sleep", "infinity");
            await LabFixture.Until(() => Task.FromResult(Printed("capsule_created", "evfol")),
                "capsule_created to be followed");
            (await lab.Run("rm", "evfol")).Ok();
            await LabFixture.Until(() => Task.FromResult(Printed("capsule_removed", "evfol")),
                "capsule_removed to be followed");
            if (follow.HasExited) Assert.Fail($"it ended by itself (exit {follow.ExitCode}): {await stderr}");
            Assert.Single(lines, l => l.Contains("\"capsule_created\"") && l.Contains("\"evfol\""));
            // It runs until stopped: SIGTERM here, as kill would (Ctrl-C's SIGINT may be ignored by a
            // test runner started in the background, and the child would inherit that).
            Assert.Equal(0, Agent.Linux.Native.kill(follow.Id, 15));
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await follow.WaitForExitAsync(cts.Token);
            Assert.Equal(143, follow.ExitCode);
        }
        finally
        {
            if (!follow.HasExited) follow.Kill(entireProcessTree: true);
            await lab.Run("rm", "evfol");
        }
    }
}
