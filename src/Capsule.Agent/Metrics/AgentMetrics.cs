using Capsule.Agent.DataPlane;
using Capsule.Core;
using Capsule.Rpc;
using Prometheus;
using MigrationOutcome = Capsule.Protos.MigrationOutcome;
using PhaseTimes = Capsule.Protos.PhaseTimes;

namespace Capsule.Agent.Metrics;

/// <summary>
/// The agent's Prometheus metrics (names in docs/observability.md). The data plane's counters are
/// not touched on the hot path: they are the engine's own counters (each written by one thread,
/// with plain adds), read when Prometheus scrapes and carried over with IncTo. Migrations are
/// counted as they end, by the source host's agent. Its own registry, so nothing else (the
/// library's default registry and its listeners) comes along.
/// </summary>
internal sealed class AgentMetrics
{
    const string P = "capsule_";

    readonly DataPlaneHost _dataPlane;
    readonly CapsuleRuntime _runtime;
    readonly List<(ICounter Counter, Func<Engine, long> Read)> _counters = [];
    readonly List<(ICounter Counter, Func<long> Read)> _dnsCounters = [];
    readonly Gauge _holdsActive, _holdPackets, _routes, _capsules, _flows;
    readonly Counter _migrations;
    readonly Histogram _phases;

    public CollectorRegistry Registry { get; }

    public AgentMetrics(AgentOptions options, DataPlaneHost dataPlane, CapsuleRuntime runtime,
        Capsule.Agent.Dns.CapsuleDnsServer dns)
    {
        _dataPlane = dataPlane;
        _runtime = runtime;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        // Before any metric exists: static labels cannot be added later.
        Registry.SetStaticLabels(new Dictionary<string, string> { ["host"] = options.Host });
        var f = Prometheus.Metrics.WithCustomRegistry(Registry);
        DataPlaneCounters(f);
        DnsServerCounters(f, dns.Counters);
        _holdsActive = f.CreateGauge(P + "holds_active", "Holds this host keeps now (capsules moving or suspended)");
        _holdPackets = f.CreateGauge(P + "holds_packets", "Packets this host's holds keep now");
        _routes = f.CreateGauge(P + "translation_table_routes", "Remote capsules in this host's translation table");
        _flows = f.CreateGauge(P + "tcp_flows_tracked", "TCP flows this host tracks to pause them (MaxTcpFlows most)");
        _capsules = f.CreateGauge(P + "local_capsules", "Capsules on this host");
        _migrations = f.CreateCounter(P + "migrations_total", "Migrations this host ran as their source, by outcome",
            ["outcome"]);
        // Shown at zero from the start, so a rate over the first migration is not lost.
        foreach (var o in EventNames.Outcomes) _migrations.WithLabels(EventNames.Outcome(o));
        _phases = f.CreateHistogram(P + "migration_phase_seconds",
            "Phase durations of the migrations this host ran as their source and that moved (PhaseTimes)",
            new HistogramConfiguration
            {
                LabelNames = ["phase"],
                // 5 ms to 41 s: a small capsule's restore to a large one's transfer.
                Buckets = Histogram.ExponentialBuckets(0.005, 2, 14),
            });
        DotNetStats.Register(Registry);
        Registry.AddBeforeCollectCallback(ReadAsync);
    }

    void DataPlaneCounters(IMetricFactory f)
    {
        var packets = f.CreateCounter(P + "dataplane_packets_total",
            "Packets carried: egress sent to other hosts, ingress delivered to capsules", ["direction"]);
        var bytes = f.CreateCounter(P + "dataplane_bytes_total", "Inner packet bytes carried", ["direction"]);
        var batches = f.CreateCounter(P + "dataplane_batches_total", "sendmmsg/recvmmsg batches", ["direction"]);
        var supers = f.CreateCounter(P + "dataplane_super_packets_total",
            "TUN super-packets: egress reads cut into segments, ingress writes of coalesced segments", ["direction"]);
        var gso = f.CreateCounter(P + "dataplane_udp_gso_messages_total",
            "UDP messages of several datagrams: egress GSO sends, ingress GRO receives", ["direction"]);
        var drops = f.CreateCounter(P + "dataplane_drops_total", "Packets refused, by reason",
            ["direction", "reason"]);
        (string Dir, Func<Engine, FlowCounters> Of)[] directions =
            [("egress", e => e.Egress), ("ingress", e => e.Ingress)];
        foreach (var (dir, of) in directions)
        {
            Add(packets.WithLabels(dir), e => Volatile.Read(ref of(e).Packets));
            Add(bytes.WithLabels(dir), e => Volatile.Read(ref of(e).Bytes));
            Add(batches.WithLabels(dir), e => Volatile.Read(ref of(e).Batches));
            Add(supers.WithLabels(dir), e => Volatile.Read(ref of(e).SuperPackets));
            Add(gso.WithLabels(dir), e => Volatile.Read(ref of(e).GsoMessages));
            foreach (var reason in DropCounters.Reasons)
                Add(drops.WithLabels(dir, DropCounters.Key(reason)), e => of(e).Drops[reason]);
        }
        void One(string name, string help, Func<Engine, long> read) => Add(f.CreateCounter(P + name, help), read);
        One("holds_held_packets_total", "Packets put in a hold", e => Volatile.Read(ref e.Egress.Held));
        One("holds_flushed_packets_total", "Held packets sent on when their hold ended",
            e => Volatile.Read(ref e.Egress.Flushed));
        One("holds_dropped_packets_total", "Packets a hold refused (full, UDP drop policy) or dropped at its end",
            e => Volatile.Read(ref e.Egress.HoldDropped));
        One("holds_dropped_udp_packets_total", "Of those refused, UDP datagrams",
            e => Volatile.Read(ref e.Egress.HoldDroppedUdp));
        One("holds_expired_total", "Holds whose lease ran out with no release",
            e => Volatile.Read(ref e.Egress.HoldsExpired));
        One("holds_expired_dropped_packets_total", "Packets of expired holds that had nowhere to go",
            e => Volatile.Read(ref e.Egress.HoldExpiredDropped));
        One("holds_spool_failures_total", "Holds kept in memory alone (their spool file could not be made)",
            e => Volatile.Read(ref e.Egress.HoldSpoolFailures));
        One("holds_refused_total", "New holds refused: this host kept MaxHolds already",
            e => Volatile.Read(ref e.HoldsRefused));
        One("holds_clamped_total", "Hold requests whose capacity or lease was cut to this host's maxima",
            e => Volatile.Read(ref e.HoldsClamped));
        One("tcp_flows_evicted_total", "TCP flows forgotten to make room in the full flow table (MaxTcpFlows)",
            e => e.FlowStats.Evicted);
        One("tcp_flows_refused_total", "New TCP flows left untracked: the flow table was full of paused flows",
            e => e.FlowStats.Refused);
        One("dataplane_delivered_local_packets_total", "Packets for a local capsule written back into the TUN",
            e => Volatile.Read(ref e.Egress.DeliveredLocal));
        One("icmp_unreachable_sent_total", "ICMP host unreachable answers a gateway gave",
            e => Volatile.Read(ref e.Egress.Unreachables));
        One("tcp_pauses_sent_total", "Zero windows sent to TCP peers in a moving capsule's name",
            e => Volatile.Read(ref e.PausesSent));
        One("tcp_reopens_sent_total", "Window reopenings sent once a hold ended",
            e => Volatile.Read(ref e.ReopensSent));
        One("tcp_acked_on_behalf_total", "Held TCP segments acknowledged in a paused capsule's name",
            e => Volatile.Read(ref e.AckedOnBehalf));
    }

    void Add(ICounter counter, Func<Engine, long> read) => _counters.Add((counter, read));

    void DnsServerCounters(IMetricFactory f, DnsCounters dns)
    {
        var answers = f.CreateCounter(P + "dns_queries_total", "DNS questions answered, by what the answer was",
            ["answer"]);
        foreach (var kind in DnsCounters.Kinds)
            _dnsCounters.Add((answers.WithLabels(DnsCounters.Key(kind)), () => dns[kind]));
        var drops = f.CreateCounter(P + "dns_drops_total", "DNS datagrams dropped unanswered, by reason", ["reason"]);
        foreach (var reason in DnsCounters.Reasons)
            _dnsCounters.Add((drops.WithLabels(DnsCounters.Key(reason)), () => dns[reason]));
        _dnsCounters.Add((f.CreateCounter(P + "dns_truncated_total",
            "DNS answers cut to a truncated header: larger than MaxAmplification times their query"),
            () => dns.Truncations));
    }

    /// <summary>On each scrape, before the registry is written out.</summary>
    async Task ReadAsync(CancellationToken ct)
    {
        _capsules.Set(_runtime.All.Count);
        foreach (var (counter, read) in _dnsCounters) counter.IncTo(read());
        // The engine exists once the data plane is up; until then its counters are not there to read.
        if (!_dataPlane.Ready.IsCompleted) return;
        var engine = _dataPlane.Engine;
        foreach (var (counter, read) in _counters) counter.IncTo(read(engine));
        _routes.Set(engine.Table.Count);
        _flows.Set(engine.FlowStats.Tracked);
        try
        {
            // A command between the egress thread's batches; bounded, as at shutdown nobody runs it.
            var (holds, packets) = await engine.HoldsNowAsync().WaitAsync(HoldsWait, ct);
            _holdsActive.Set(holds);
            _holdPackets.Set(packets);
        }
        catch (TimeoutException)
        {
            // Left as last read: the scrape goes on without them.
        }
    }

    static readonly TimeSpan HoldsWait = TimeSpan.FromSeconds(2);

    /// <summary>
    /// A migration this host ran as its source ended; <paramref name="times"/> when it reported them.
    /// </summary>
    public void Migrated(MigrationOutcome outcome, PhaseTimes? times)
    {
        _migrations.WithLabels(EventNames.Outcome(outcome)).Inc();
        // Only moves that completed: a failed one's phases stop wherever it failed.
        if (outcome != MigrationOutcome.Ok || times is null) return;
        void Phase(string name, long ms) => _phases.WithLabels(name).Observe(Math.Max(ms, 0) / 1000.0);
        Phase("stage", times.StageMs);
        Phase("sync", times.SyncMs);
        Phase("dump", times.DumpMs);
        Phase("transfer", times.TransferMs);
        Phase("restore", times.RestoreMs);
        Phase("flush", times.FlushMs);
        Phase("total", times.TotalMs);
        Phase("criu_dump", times.CriuDumpMs);
        Phase("criu_restore", times.CriuRestoreMs);
    }
}
