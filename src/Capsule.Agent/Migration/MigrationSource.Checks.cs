using Capsule.Core;
using Capsule.Protos;
using Google.Protobuf;
using Grpc.Core;

namespace Capsule.Agent.Migration;

/// <summary>
/// Refusal before any freeze (issue 14, item 4): the source tells the target what the capsule needs (its CPU as
/// CRIU records it, its resident memory, its image's size on disk), and the target's Prepare checks them before it
/// builds anything (<see cref="MoveChecks"/>). A refusal changes nothing: the capsule never stopped running.
/// </summary>
internal sealed partial class MigrationSource
{
    async Task<PrepareRequest> PrepareRequestAsync(Move m, CancellationToken ct)
    {
        var c = m.Capsule;
        var rss = CapsuleFootprint.ResidentBytes(c.Pid);
        var cpu = await criu.CpuInfoAsync(Path.Combine(O.StateDir, "migrations"), ct);
        return new PrepareRequest
        {
            Name = c.Name, Locator = c.Locator.ToString(), PostCopy = m.PostCopy, OwnUserNs = c.Root is not null,
            RssBytes = rss,
            // The memory, CRIU's other images (small beside it) and the capsule's own folder land in the target's
            // state folder; a post-copy move's memory arrives as it is touched, into the same place.
            ImageBytes = rss + CapsuleFootprint.FolderBytes(c.Dir),
            Cpuinfo = ByteString.CopyFrom(cpu),
        };
    }

    /// <summary>Waits for the target's checks; a refusal names what is missing and that nothing was changed.</summary>
    static async Task RefusedAsync(Move m)
    {
        try
        {
            await m.Prepared!;
        }
        catch (RpcException e)
        {
            throw new InvalidOperationException($"{m.Target.Name} cannot take capsule '{m.Capsule.Name}': " +
                $"{e.Status.Detail}; nothing was changed, the capsule runs on");
        }
    }

    /// <summary>What the transfer sends: CRIU's images but the memory, and the folder but what was staged.</summary>
    static long TransferEstimate(Move m)
    {
        var staged = m.Staged.Unchanged(m.Capsule.Dir);
        return CapsuleFootprint.ImageBytes(m.Images) +
            CapsuleFootprint.FolderBytes(m.Capsule.Dir, f => !staged.Contains(f));
    }

    /// <summary>A host's name by its underlay address, for the report (the address itself if none has it).</summary>
    static Func<Locator, string> HostNames(DirectoryState state) => underlay =>
        state.Hosts.Values.FirstOrDefault(h => h.Underlay == underlay)?.Name ?? underlay.ToString();
}
