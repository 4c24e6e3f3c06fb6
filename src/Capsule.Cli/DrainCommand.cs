using System.CommandLine;
using Capsule.Core;
using Capsule.Protos;
using Grpc.Core;

namespace Capsule.Cli;

/// <summary>
/// `capsule drain HOST`: the host's agent cordons it and moves every capsule off it (docs/drain.md). This
/// command starts the drain and shows it until it ends; the drain goes on in the agent if the command goes away.
/// </summary>
public static class DrainCommand
{
    public static Command Build()
    {
        var host = new Argument<string>("host") { Description = "Host to empty, e.g. h1" };
        var to = new Option<string[]>("--to")
        {
            Description = "Hosts it may move capsules to (repeat the option); default: every other host that may " +
                "take one",
            AllowMultipleArgumentsPerToken = true,
        };
        var parallel = new Option<int>("--parallel")
            { Description = "Moves at once (1-16)", DefaultValueFactory = _ => 2 };
        var bandwidth = new Option<string>("--bandwidth")
            { Description = "Limit of each move's transfer, bytes per second: 50M, 1G (K, M, G: binary)" };
        var status = new Option<bool>("--status") { Description = "Show the host's drain now, start nothing" };
        var stop = new Option<bool>("--stop")
            { Description = "Start no further move (those under way finish); drain again to resume" };
        var detach = new Option<bool>("--detach") { Description = "Start the drain and return at once" };
        var cmd = new Command("drain",
            "Cordon a host and move every capsule off it, placed by free memory, CPU and capsule count")
        {
            host, to, parallel, bandwidth, status, stop, detach, CommandTree.JsonOption,
        };
        cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            var (_, agent) = await CommandTree.SessionOf(pr).AgentAsync(pr.GetValue(host)!, ct);
            var json = pr.GetValue(CommandTree.JsonOption);
            if (pr.GetValue(stop)) return Show(await agent.StopDrainAsync(new Empty(), cancellationToken: ct), json);
            if (pr.GetValue(status))
            {
                using var once = agent.DrainStatus(new DrainStatusRequest(), cancellationToken: ct);
                return Show(await DrainOutput.LastAsync(once, ct), json);
            }
            var request = new DrainRequest
            {
                Parallel = pr.GetValue(parallel), BandwidthBytesPerSecond = Rate(pr.GetValue(bandwidth)),
            };
            request.To.AddRange(pr.GetValue(to) ?? []);
            if (request.Parallel is < 1 or > 16) throw new UserError("--parallel must be between 1 and 16");
            var started = await agent.DrainAsync(request, cancellationToken: ct);
            if (pr.GetValue(detach)) return Show(started, json);
            using var watch = agent.DrainStatus(new DrainStatusRequest { Follow = true }, cancellationToken: ct);
            var last = json
                ? await DrainOutput.LastAsync(watch, ct)
                : await DrainOutput.FollowAsync(watch.ResponseStream.ReadAllAsync(ct), started);
            return Show(last, json);
        }));
        return cmd;
    }

    /// <summary>A rate as `--bandwidth` takes it: a size per second ("50M", "50MiB/s"); empty: no limit.</summary>
    internal static long Rate(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return 0;
        return ByteRate.Parse(text) ?? throw new UserError(
            $"--bandwidth '{text}' is not a rate: a positive size a second, e.g. 500K, 50M or 1G");
    }

    static int Show(DrainReport r, bool json)
    {
        if (json) Output.WriteJson(DrainJson.Of(r), DrainCliJson.Default.DrainJson);
        else DrainOutput.Summary(r);
        return r.State is DrainState.Failed ? 1 : 0;
    }
}
