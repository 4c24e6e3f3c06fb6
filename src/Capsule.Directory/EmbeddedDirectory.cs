using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Capsule.Core;

namespace Capsule.Dir;

/// <summary>
/// The default directory: one process, the state in memory, every change written to disk before
/// it is acknowledged (write to a temporary file, fsync, rename, fsync the folder), and pushed to watchers.
/// </summary>
public sealed class EmbeddedDirectory : IDirectory
{
    readonly string _file;
    readonly Lock _gate = new();
    readonly List<Channel<DirectoryUpdate>> _watchers = [];
    DirectoryState _state;

    public EmbeddedDirectory(string stateDir, Prefix pool)
    {
        Directory.CreateDirectory(stateDir);
        _file = Path.Combine(stateDir, "directory.json");
        _state = File.Exists(_file) ? Load(_file, pool) : new DirectoryState(pool);
    }

    public DirectoryState State { get { lock (_gate) return _state; } }

    Task<T> Apply<T>(Func<DirectoryState, DirectoryState.Result> op, Func<DirectoryState.Result, T> pick)
    {
        lock (_gate)
        {
            var r = op(_state);
            if (!r.Ok) throw new DirectoryException(r.Error!, r.Conflict);
            if (r.Change is not null)
            {
                Save(_file, r.State); // durable before anyone hears of it
                _state = r.State;
                var update = new DirectoryUpdate(r.State, [r.Change], false);
                foreach (var w in _watchers) w.Writer.TryWrite(update);
            }
            return Task.FromResult(pick(r));
        }
    }

    public Task PutHostAsync(HostRecord host, CancellationToken ct = default) => Apply(s => s.PutHost(host), _ => 0);
    public Task DeleteHostAsync(string name, CancellationToken ct = default) => Apply(s => s.DeleteHost(name), _ => 0);
    public Task<CapsuleRecord> AllocateAsync(string name, string host, CancellationToken ct = default) =>
        Apply(s => s.AllocateCapsule(name, host), r => r.Change!.Capsule!);
    public Task<CapsuleRecord> UpdateAsync(string name, string host, CapsuleState state, long expectRevision,
        string? detail = null, CancellationToken ct = default) =>
        Apply(s => s.UpdateCapsule(name, host, state, expectRevision, detail), r => r.Change!.Capsule!);
    public Task ReleaseAsync(string name, CancellationToken ct = default) => Apply(s => s.ReleaseCapsule(name), _ => 0);
    public Task<DirectoryState> SnapshotAsync(CancellationToken ct = default) => Task.FromResult(State);

    public async IAsyncEnumerable<DirectoryUpdate> WatchAsync([EnumeratorCancellation] CancellationToken ct)
    {
        // Unbounded, and a slow watcher takes all that waits at once: one update with every change
        // in order and the newest state, so it catches up in one step.
        var ch = Channel.CreateUnbounded<DirectoryUpdate>(new UnboundedChannelOptions { SingleReader = true });
        DirectoryState first;
        lock (_gate)
        {
            _watchers.Add(ch);
            first = _state;
        }
        try
        {
            yield return DirectoryUpdate.Whole(first);
            while (await ch.Reader.WaitToReadAsync(ct))
            {
                DirectoryUpdate? latest = null;
                List<DirectoryChange>? merged = null;
                while (ch.Reader.TryRead(out var u))
                {
                    if (latest is not null) (merged ??= [.. latest.Changes]).AddRange(u.Changes);
                    latest = u;
                }
                if (latest is not null) yield return merged is null ? latest : latest with { Changes = merged };
            }
        }
        finally
        {
            lock (_gate) _watchers.Remove(ch);
        }
    }

    /// <summary>
    /// Writes <paramref name="state"/> as the state folder's file, for a directory started on it
    /// later (a benchmark's ten thousand capsules, or a state carried over from another store).
    /// </summary>
    public static void WriteState(string stateDir, DirectoryState state)
    {
        Directory.CreateDirectory(stateDir);
        Save(Path.Combine(stateDir, "directory.json"), state);
    }

    // ---- persistence ----

    internal sealed record FileHost(string Name, string Underlay, string AgentEndpoint, string? Serves,
        bool Cordoned = false);
    internal sealed record FileCapsule(string Name, string Locator, string Host, CapsuleState State, long Revision,
        string? Detail);
    internal sealed record FileState(int Format, string Pool, long Revision, List<FileHost> Hosts,
        List<FileCapsule> Capsules);


    static void Save(string file, DirectoryState s)
    {
        var dto = new FileState(1, s.Pool.ToString(), s.Revision,
            s.Hosts.Values.Select(h => new FileHost(h.Name, h.Underlay.ToString(), h.AgentEndpoint,
                h.Serves.Length == 0 ? null : h.Serves, h.Cordoned)).ToList(),
            s.Capsules.Values.Select(c => new FileCapsule(c.Name, c.Locator.ToString(), c.Host, c.State, c.Revision,
                c.Detail)).ToList());
        var tmp = file + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(fs, dto, DirectoryFileJson.Default.FileState);
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, file, overwrite: true);
        // The rename lives in the folder: without this a power cut can bring back the old file
        // (or none) although the change was acknowledged.
        FolderSync.FsyncFolder(Path.GetDirectoryName(Path.GetFullPath(file))!);
    }

    /// <summary>The state in a state folder, whatever its pool (to carry it into another store).</summary>
    public static DirectoryState ReadState(string stateDir)
    {
        var file = Path.Combine(stateDir, "directory.json");
        if (!File.Exists(file)) throw new DirectoryException($"{file} does not exist: no directory state there");
        return Load(file, null);
    }

    static DirectoryState Load(string file, Prefix? pool)
    {
        FileState dto;
        try
        {
            dto = JsonSerializer.Deserialize(File.ReadAllText(file), DirectoryFileJson.Default.FileState)
                  ?? throw new DirectoryException($"{file} is empty");
        }
        catch (JsonException e)
        {
            throw new DirectoryException(
                $"{file} is not a readable directory state ({e.Message}); move it aside to start empty");
        }
        if (dto.Format != 1) throw new DirectoryException($"{file} has format {dto.Format}; this build reads format 1");
        var filePool = Prefix.Parse(dto.Pool);
        if (pool is not null && filePool != pool)
            throw new DirectoryException($"{file} was made for pool {filePool}, not {pool}; " +
                $"start with --pool {filePool} or move the file aside");
        var hosts = dto.Hosts.ToImmutableSortedDictionary(h => h.Name,
            h => new HostRecord(h.Name, Locator.Parse(h.Underlay), h.AgentEndpoint, h.Serves ?? "", h.Cordoned));
        var caps = dto.Capsules.ToImmutableSortedDictionary(c => c.Name,
            c => new CapsuleRecord(c.Name, Locator.Parse(c.Locator), c.Host, c.State, c.Revision)
                { Detail = c.Detail });
        return new DirectoryState(filePool, dto.Revision, hosts, caps);
    }
}

/// <summary>The state file's JSON, source-generated: the native (AOT) binary has no reflection serializer.</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(EmbeddedDirectory.FileState))]
internal sealed partial class DirectoryFileJson : JsonSerializerContext;
