using System.CommandLine;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>
/// `capsule events [--follow] [--json]`: what the agents saw happen (migrations, holds, hosts and
/// capsules coming and going). Each agent keeps its own events; this asks every host the directory
/// lists and merges them by time. An agent that cannot be asked is named on stderr, and the rest shown.
/// </summary>
public static class EventsCommand
{
    public static Command Build()
    {
        var follow = new Option<bool>("--follow", "-f")
            { Description = "Go on printing events as they happen, until Ctrl-C" };
        var cmd = new Command("events",
            "What happened: migrations and their outcomes, holds, hosts joining and leaving, capsules created " +
            "and removed (from every host's agent, by time)")
        {
            follow, CommandTree.JsonOption,
        };
        cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var s = CommandTree.SessionOf(pr);
            var json = pr.GetValue(CommandTree.JsonOption);
            var printer = new Printer(json ? EventOutput.WriteJson : EventOutput.WriteLine);
            var state = await s.Directory.SnapshotAsync(ct);
            var history = await Task.WhenAll(state.Hosts.Values.Select(h => HistoryAsync(s.AgentEndpoint(h), h, ct)));
            var merged = history.SelectMany(x => x).OrderBy(e => e.TimeUnixMs)
                .ThenBy(e => e.Host, StringComparer.Ordinal).ThenBy(e => e.Seq);
            foreach (var e in merged) printer.Print(e);
            if (!pr.GetValue(follow)) return 0;
            await new Follower(s.Directory, printer, s.AgentEndpoint).RunAsync(ct);
            return 0;
        }));
        return cmd;
    }

    static async Task<List<AgentEvent>> HistoryAsync(string endpoint, HostRecord h, CancellationToken ct)
    {
        var list = new List<AgentEvent>();
        try
        {
            var agent = new HostAgent.HostAgentClient(Channels.For(endpoint));
            using var call = agent.Events(new EventsRequest(), deadline: DateTime.UtcNow.AddSeconds(10),
                cancellationToken: ct);
            await foreach (var e in call.ResponseStream.ReadAllAsync(ct)) list.Add(e);
        }
        catch (RpcException e) when (!ct.IsCancellationRequested)
        {
            Output.Error($"{h.Name}: its events could not be read ({e.Status.Detail})");
        }
        return list;
    }

    /// <summary>
    /// Prints each event once, from any thread: per host, only what is newer than the last printed.
    /// Newer by time, then number: an agent stamps both in the same order, and a restarted agent
    /// numbers from 1 again, later.
    /// </summary>
    sealed class Printer(Action<AgentEvent> write)
    {
        readonly Dictionary<string, (long Time, long Seq)> _last = [];
        readonly Lock _gate = new();

        public void Print(AgentEvent e)
        {
            lock (_gate)
            {
                if (_last.TryGetValue(e.Host, out var last)
                    && (e.TimeUnixMs < last.Time || (e.TimeUnixMs == last.Time && e.Seq <= last.Seq)))
                    return;
                _last[e.Host] = (e.TimeUnixMs, e.Seq);
                write(e);
            }
        }
    }

    /// <summary>
    /// --follow: a stream from every host's agent, also from hosts that join later (the directory
    /// is watched); a stream that ends (its agent restarted) is opened again.
    /// </summary>
    sealed class Follower(IDirectory directory, Printer printer, Func<HostRecord, string> endpointOf)
    {
        static readonly TimeSpan Retry = TimeSpan.FromSeconds(1);
        readonly Dictionary<string, CancellationTokenSource> _hosts = [];
        readonly List<CancellationTokenSource> _stops = [];
        readonly List<Task> _streams = [];

        public async Task RunAsync(CancellationToken ct)
        {
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    try
                    {
                        await foreach (var update in directory.WatchAsync(ct)) Track(update.State, ct);
                    }
                    catch (DirectoryException e)
                    {
                        Output.Error($"{e.Message}; watching it again");
                    }
                    await Task.Delay(Retry, ct);
                }
            }
            catch (Exception e) when (ct.IsCancellationRequested && e is OperationCanceledException or RpcException)
            {
                // Cancelled: the end of --follow. (Ctrl-C itself ends the process at once, with 130:
                // the command line here registers no signal handler, and there is nothing to tidy.)
            }
            finally
            {
                foreach (var stop in _stops) await stop.CancelAsync();
                await Task.WhenAll(_streams);
                foreach (var stop in _stops) stop.Dispose();
            }
        }

        void Track(DirectoryState state, CancellationToken ct)
        {
            foreach (var h in state.Hosts.Values.Where(h => !_hosts.ContainsKey(h.Name)))
            {
                var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
                _hosts[h.Name] = stop;
                _stops.Add(stop);
                _streams.Add(StreamAsync(h, stop.Token));
            }
            // A host that left: its stream stops (disposed at the end, once no stream uses its token).
            foreach (var gone in _hosts.Keys.Where(n => !state.Hosts.ContainsKey(n)).ToList())
            {
                _hosts[gone].Cancel();
                _hosts.Remove(gone);
            }
        }

        async Task StreamAsync(HostRecord h, CancellationToken ct)
        {
            var agent = new HostAgent.HostAgentClient(Channels.For(endpointOf(h)));
            var failing = false;
            while (!ct.IsCancellationRequested)
            {
                try
                {
                    using var call = agent.Events(new EventsRequest { Follow = true }, cancellationToken: ct);
                    await foreach (var e in call.ResponseStream.ReadAllAsync(ct))
                    {
                        failing = false;
                        printer.Print(e);
                    }
                }
                catch (Exception e) when (ct.IsCancellationRequested && e is OperationCanceledException or RpcException)
                {
                    return;
                }
                catch (RpcException e)
                {
                    // Said once per outage, not once a second.
                    if (!failing) Output.Error($"{h.Name}: no events for now ({e.Status.Detail}); trying again");
                    failing = true;
                }
                try
                {
                    await Task.Delay(Retry, ct);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }
}
