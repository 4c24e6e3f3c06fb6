using Capsule.Agent.Events;
using Capsule.Agent.Faults;
using Capsule.Agent.Linux;
using Capsule.Agent.Metrics;
using Capsule.Agent.Migration;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Agent;

/// <summary>
/// The agent's gRPC API, used by the CLI (and, for migration, by peer agents). Who may call what is checked twice:
/// by role for every call (<see cref="AgentAccess"/>), then, for the host-to-host calls, which host may act on
/// which capsule (<see cref="PeerCallChecks"/>).
/// </summary>
internal sealed partial class AgentService(AgentOptions options, CapsuleRuntime runtime, DataPlaneHost dataPlane,
    MigrationRunner migrations, MigrationTarget target, Suspension suspension, FaultInjector faults,
    EventLog events, DataPlane.KeyExchange keys, PeerCallChecks peers, Drain.Drainer drainer)
    : Protos.HostAgent.HostAgentBase
{
    internal static async Task<T> Guard<T>(Func<Task<T>> f)
    {
        try { return await f(); }
        catch (DirectoryException e) { throw new RpcException(new Status(StatusCode.FailedPrecondition, e.Message)); }
        catch (KeyNotFoundException e) { throw new RpcException(new Status(StatusCode.NotFound, e.Message)); }
        catch (ArgumentException e) { throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message)); }
        catch (DataPlane.HoldRefusedException e)
        {
            throw new RpcException(new Status(StatusCode.ResourceExhausted, e.Message));
        }
        catch (Exception e) when (e is CommandFailedException or InvalidOperationException or InjectedFaultException
            or TimeoutException or IOException or InvalidDataException or Checkpoint.CheckpointException)
        {
            throw new RpcException(new Status(StatusCode.Internal, e.Message));
        }
    }

    CapsuleInfo Info(LocalCapsule c)
    {
        var info = new CapsuleInfo
        {
            Name = c.Name, Locator = c.Locator.ToString(), Host = options.Host, Netns = c.Netns, StateDir = c.Dir,
            Pid = CapsuleProcess.IsAlive(c.Pid) ? c.Pid : 0,
            State = CapsuleProcess.IsAlive(c.Pid) ? Protos.CapsuleState.Running : Protos.CapsuleState.Stopped,
        };
        info.Command.AddRange(c.Command);
        if (c.Root is not null) info.RootFs = c.Root.ToProto();
        if (c.Limits is not null)
        {
            info.Limits = c.Limits.ToProto();
            info.Cgroups.AddRange(c.Limits.Folders(c.Netns));
        }
        if (info.Pid == 0) return info;
        foreach (var (kind, inode, own) in CapsuleProcess.Namespaces(c.Pid))
            info.Namespaces.Add(new NamespaceInfo { Kind = kind, Inode = inode, Own = own });
        info.CapBounding = CapsuleProcess.CapBounding(c.Pid);
        return info;
    }

    public override Task<HoldReply> Hold(HoldRequest request, ServerCallContext context) => Guard(async () =>
    {
        if (request.LeaseMs < 0) throw new ArgumentException($"lease_ms must not be negative (got {request.LeaseMs})");
        var lease = request.LeaseMs > 0 ? TimeSpan.FromMilliseconds(request.LeaseMs) : options.HoldLease;
        var capacity = request.Capacity > 0 ? request.Capacity : MigrationSource.DefaultHoldPackets;
        await peers.HoldAsync(context, Locator.Parse(request.Locator));
        var cut = await dataPlane.Engine.HoldAsync(Locator.Parse(request.Locator), Locator.Parse(request.Via),
            capacity, request.UdpDrop, pause: !faults.Fires(FaultPoints.NoPause, FaultAction.Skip), lease);
        return new HoldReply { KeyId = cut.KeyId, Sent = { cut.Sent ?? [] } };
    });

    public override Task<ReleaseReply> Release(ReleaseRequest request, ServerCallContext context) => Guard(async () =>
    {
        var loc = Locator.Parse(request.Locator);
        var to = request.ToUnderlay.Length == 0 ? Locator.None : Locator.Parse(request.ToUnderlay);
        await peers.ReleaseAsync(context, loc);
        if (!to.IsNone) dataPlane.Pin(loc, to); // the new route first, so nothing sent after the flush goes the old way
        // A capsule that moved here while this host held its local peers' packets gets its direct
        // route once those are flushed (MigrationTarget waits for the hold's end).
        var held = await dataPlane.Engine.HoldContentsAsync(loc);
        var r = await dataPlane.Engine.ReleaseAsync(loc, to);
        return FlowReports.Reply(r.Flushed, r.Dropped, held);
    });

    public override async Task Migrate(MigrateRequest request, IServerStreamWriter<MigrateProgress> responseStream,
        ServerCallContext context)
    {
        // A migration, once begun, runs to its end even if the CLI that asked for it goes away.
        // Phases and a transfer's progress are reported from different tasks; a stream takes one write at a time.
        using var writing = new SemaphoreSlim(1);
        async Task Report(MigrateProgress p)
        {
            await writing.WaitAsync();
            try { await responseStream.WriteAsync(p); }
            catch (Exception e)
                when (e is InvalidOperationException or IOException or OperationCanceledException or RpcException) { }
            finally { writing.Release(); }
        }
        var result = await migrations.RunAsync(request, Report);
        await responseStream.WriteAsync(new MigrateProgress { Phase = "done", Result = result });
    }

    public override async Task Events(EventsRequest request, IServerStreamWriter<AgentEvent> responseStream,
        ServerCallContext context)
    {
        await foreach (var e in events.ReadAsync(request.Follow, context.CancellationToken))
            await responseStream.WriteAsync(e);
    }

    public override async Task Suspend(SuspendRequest request, IServerStreamWriter<FileChunk> responseStream,
        ServerCallContext context)
    {
        // The suspend runs to its end even if the CLI goes away (stopping half-way could leave the
        // capsule nowhere); only sending its file stops with the CLI, and the file stays here.
        var r = await Guard(() => suspension.SuspendAsync(request, CancellationToken.None));
        await suspension.SendKeptAsync(r, responseStream, context.CancellationToken);
    }

    public override async Task FetchSuspended(SuspendedRef request, IServerStreamWriter<FileChunk> responseStream,
        ServerCallContext context)
    {
        var r = await Guard(() => suspension.KeptAsync(request, context.CancellationToken));
        await suspension.SendKeptAsync(r, responseStream, context.CancellationToken);
    }

    public override Task<Empty> ConfirmSuspended(SuspendedRef request, ServerCallContext context) =>
        Guard(async () =>
        {
            await suspension.ConfirmAsync(request, context.CancellationToken);
            return new Empty();
        });

    public override Task<ResumeResult> Resume(IAsyncStreamReader<FileChunk> requestStream,
        ServerCallContext context) =>
        Guard(() => suspension.ResumeAsync(requestStream, context.CancellationToken));

    public override Task<Empty> Prepare(PrepareRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            await peers.PrepareAsync(context, request.Name);
            await target.CheckRoomAsync(request, context.CancellationToken);
            await target.PrepareAsync(request.Name, Locator.Parse(request.Locator), request.PostCopy,
                request.OwnUserNs, context.CancellationToken);
            return new Empty();
        });

    public override Task<Empty> Abort(NameRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            await peers.SourceAsync(context, request.Name, done: true);
            await target.AbortAsync(request.Name, context.CancellationToken);
            return new Empty();
        });

    public override Task<ReceiveReply> Receive(IAsyncStreamReader<ImageChunk> requestStream,
        ServerCallContext context) =>
        Guard(() => target.ReceiveAsync(requestStream, head => peers.SourceAsync(context, head.Name, done: false),
            context.CancellationToken));

    public override Task<StageReply> Stage(IAsyncStreamReader<ImageChunk> requestStream, ServerCallContext context) =>
        Guard(() => target.StageAsync(requestStream, head => peers.SourceAsync(context, head.Name, done: false),
            context.CancellationToken));

    public override Task Pages(IAsyncStreamReader<PageBytes> requestStream,
        IServerStreamWriter<PageBytes> responseStream, ServerCallContext context) =>
        Guard(async () =>
        {
            await target.PagesAsync(requestStream, responseStream,
                name => peers.SourceAsync(context, name, done: false), context.CancellationToken);
            return true;
        });

    public override Task StreamPages(IAsyncStreamReader<PageBytes> requestStream,
        IServerStreamWriter<PageBytes> responseStream, ServerCallContext context) =>
        Guard(async () =>
        {
            await target.StreamPagesAsync(requestStream, responseStream,
                name => peers.SourceAsync(context, name, done: false), context.CancellationToken);
            return true;
        });

    public override Task<CapsuleInfo> Create(CreateRequest request, ServerCallContext context) =>
        Guard(async () => Info(await runtime.CreateAsync(request.Name, request.Command, request.UdpDrop,
            request.Rootfs.Length > 0 ? request.Rootfs : null, CapsuleLimits.From(request.Limits),
            context.CancellationToken)));

    public override Task<Empty> Remove(NameRequest request, ServerCallContext context) =>
        Guard(async () =>
        {
            await runtime.RemoveAsync(request.Name, context.CancellationToken);
            return new Empty();
        });

    public override Task<CapsuleInfo> Get(NameRequest request, ServerCallContext context) =>
        Guard(() => Task.FromResult(Info(runtime.Find(request.Name)
            ?? throw new KeyNotFoundException($"capsule '{request.Name}' is not on host {options.Host}"))));

    public override Task<ListReply> List(Empty request, ServerCallContext context)
    {
        var r = new ListReply();
        foreach (var c in runtime.All) r.Capsules.Add(Info(c));
        return Task.FromResult(r);
    }

    public override Task<LogsReply> Logs(LogsRequest request, ServerCallContext context) => Guard(async () =>
    {
        var c = runtime.Find(request.Name)
            ?? throw new KeyNotFoundException($"capsule '{request.Name}' is not on host {options.Host}");
        var path = request.Stderr ? c.StderrPath : c.StdoutPath;
        if (!File.Exists(path)) return new LogsReply();
        await using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        var max = request.MaxBytes > 0 ? request.MaxBytes : 1 << 20;
        if (fs.Length > max) fs.Seek(-max, SeekOrigin.End);
        var buf = new byte[fs.Length - fs.Position];
        await fs.ReadExactlyAsync(buf);
        return new LogsReply { Data = Google.Protobuf.ByteString.CopyFrom(buf) };
    });

    public override Task<PeerKeyReply> PeerKey(PeerKeyRequest request, ServerCallContext context) => Guard(() =>
    {
        peers.PeerKey(context, request.FromHost);
        keys.Accept(request.FromHost, request.KeyId, request.Key.Span, request.SendYours, request.HasNone);
        return Task.FromResult(new PeerKeyReply());
    });

    public override async Task<StatsReply> Stats(Empty request, ServerCallContext context)
    {
        var e = dataPlane.Engine;
        var r = new StatsReply { Host = options.Host, Capsules = runtime.All.Count, Routes = e.Table.Count };
        void C(string n, long v) => r.Counters.Add(new Counter { Name = n, Value = v });
        var (eg, ig) = (e.Egress, e.Ingress); // the lanes' counts added up, once
        C("dataplane_lanes", e.Lanes);
        foreach (var (lane, egress, ingress) in e.ByLane())
        {
            C($"lane{lane}_egress_packets", egress);
            C($"lane{lane}_ingress_packets", ingress);
        }
        C("egress_packets", eg.Packets);
        C("egress_bytes", eg.Bytes);
        C("egress_batches", eg.Batches);
        C("egress_super_packets", eg.SuperPackets);
        C("egress_gso_sends", eg.GsoMessages);
        C("egress_thread_allocated_bytes", Volatile.Read(ref eg.Allocated));
        C("icmp_unreachable_sent", eg.Unreachables);
        C("tcp_paused", e.PausesSent);
        C("tcp_reopened", e.ReopensSent);
        C("acked_for_paused_capsules", e.AckedOnBehalf);
        C("held", eg.Held);
        C("flushed", eg.Flushed);
        C("hold_dropped", eg.HoldDropped);
        C("hold_dropped_udp", eg.HoldDroppedUdp);
        C("hold_spool_failures", eg.HoldSpoolFailures);
        C("delivered_local_via_tun", eg.DeliveredLocal);
        C("holds_expired", eg.HoldsExpired);
        C("hold_expired_dropped", eg.HoldExpiredDropped);
        C("holds_refused", e.HoldsRefused);
        C("holds_clamped", e.HoldsClamped);
        var flows = e.FlowStats;
        C("tcp_flows_tracked", flows.Tracked);
        C("tcp_flows_evicted", flows.Evicted);
        C("tcp_flows_refused", flows.Refused);
        C("ingress_packets", ig.Packets);
        C("ingress_bytes", ig.Bytes);
        C("ingress_batches", ig.Batches);
        C("ingress_gro_messages", ig.GsoMessages);
        C("ingress_super_packets", ig.SuperPackets);
        C("ingress_thread_allocated_bytes", Volatile.Read(ref ig.Allocated));
        C("keys_sent", Volatile.Read(ref dataPlane.Keys.SendKeysInstalled));
        C("keys_received", Volatile.Read(ref dataPlane.Keys.ReceiveKeysInstalled));
        // Readiness of the authenticated data plane: peers it can both send to and open datagrams from.
        var peers = dataPlane.State?.Hosts.Values.Where(h => h.Name != options.Host).ToList() ?? [];
        C("peer_hosts", peers.Count);
        C("peer_hosts_keyed", peers.Count(h => dataPlane.Keys.HasSendKey(h.Underlay)
            && dataPlane.Keys.HasReceiveKey(h.Underlay)));
        foreach (var reason in DropCounters.Reasons)
        {
            var v = eg.Drops[reason] + ig.Drops[reason];
            r.Drops.Add(new Counter { Name = DropCounters.Key(reason), Value = v });
        }
        // Drops the kernel makes for us (nft), so one view shows every refused packet.
        foreach (var (name, v) in await HostNetwork.CountersAsync())
            r.Drops.Add(new Counter { Name = "kernel_" + name, Value = v });
        return r;
    }
}
