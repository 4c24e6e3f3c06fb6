using System.CommandLine;
using System.Runtime.InteropServices;
using Capsule.Core;
using Capsule.Protos;
using Capsule.Rpc;
using Grpc.Core;
using Spectre.Console;

namespace Capsule.Cli;

/// <summary>`capsule suspend`, `resume` and `inspect`: a capsule parked in one file and revived on any host.</summary>
public static class SuspendCommands
{
    public static IEnumerable<Command> Build()
    {
        {
            var name = new Argument<string>("name") { Description = "Capsule to suspend" };
            var to = new Option<string>("--to") { Description = "File to write (must not exist)", Required = true };
            var fetch = new Option<bool>("--fetch")
            {
                Description = "Fetch the file of a capsule suspended already whose transfer failed (its host keeps it)"
            };
            var cmd = new Command("suspend",
                "Freeze a capsule into one file and remove it from its host; its locator stays reserved")
            {
                name, to, fetch, CommandTree.JsonOption
            };
            cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var json = pr.GetValue(CommandTree.JsonOption);
                var file = Path.GetFullPath(pr.GetValue(to)!);
                // Checked before anything freezes: a file that cannot be written here would leave the
                // capsule's only copy on its host.
                if (File.Exists(file)) throw new UserError($"{file} exists already; choose another file " +
                    "(nothing is overwritten)");
                if (!Directory.Exists(Path.GetDirectoryName(file)))
                    throw new UserError($"folder {Path.GetDirectoryName(file)} does not exist");
                using var interrupts = new Interrupts(ct);
                ct = interrupts.Token;
                var (c, agent) = await s.CapsuleAsync(pr.GetValue(name)!, ct);
                var fetching = pr.GetValue(fetch);
                using var call = fetching
                    ? agent.FetchSuspended(new SuspendedRef { Name = c.Name }, cancellationToken: ct)
                    : agent.Suspend(new SuspendRequest { Name = c.Name, File = file }, cancellationToken: ct);
                var r = await ReceiveAsync(call.ResponseStream, c, file, fetching, !json, ct);
                // Only now, with the whole file checked and in place, may the host delete its copy.
                try
                {
                    await agent.ConfirmSuspendedAsync(new SuspendedRef { Name = c.Name, Id = r.Id },
                        cancellationToken: ct);
                }
                catch (RpcException e)
                {
                    Output.Error($"warning: {file} is whole, but {c.Host} could not be told to delete its copy " +
                        $"{r.Kept} ({e.Status.Detail}); it goes there once the capsule is resumed or removed");
                }
                if (json)
                    Output.WriteJson(new SuspendJson(c.Name, file, r.Bytes, r.Processes, r.Connections, r.Peers,
                        new SuspendPhasesJson(r.Times.SyncMs, r.Times.DumpMs, r.Times.TransferMs, r.Times.TotalMs)),
                        CliJson.Default.SuspendJson);
                else if (fetching)
                    Console.WriteLine($"the file of suspended capsule {c.Name} fetched to {file} " +
                        $"({r.Bytes / 1024.0:F0} KiB); {c.Host} no longer keeps it");
                else
                    Console.WriteLine($"capsule {c.Name} suspended to {file} ({r.Bytes / 1024.0:F0} KiB, " +
                        $"{r.Processes} processes, {r.Connections} connections) in {r.Times.TotalMs} ms; " +
                        $"locator {c.Locator} stays reserved, {r.Peers} peer host(s) hold its packets " +
                        "until it resumes");
                return 0;
            }));
            yield return cmd;
        }
        {
            var file = new Argument<string>("file") { Description = "A file written by `capsule suspend`" };
            var on = new Option<string>("--on") { Description = "Host to resume it on, e.g. h2", Required = true };
            var cmd = new Command("resume", "Send a suspend file to a host, which checks it and restores its capsule")
            {
                file, on, CommandTree.JsonOption
            };
            cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var s = CommandTree.SessionOf(pr);
                var json = pr.GetValue(CommandTree.JsonOption);
                var path = Path.GetFullPath(pr.GetValue(file)!);
                if (!File.Exists(path)) throw new UserError($"no such file: {path}");
                var size = new FileInfo(path).Length;
                if (size == 0) throw new UserError($"{path} is empty: not a capsule suspend file");
                using var interrupts = new Interrupts(ct);
                ct = interrupts.Token;
                var (_, agent) = await s.AgentAsync(pr.GetValue(on)!, ct);
                // The agent checks the file (size, transfer checksum, the file's own checksum) once it has
                // it all: reading it here first would only double the time a large file takes.
                using var call = agent.Resume(cancellationToken: ct);
                try
                {
                    await WithProgress(!json, $"sending {Path.GetFileName(path)}", report =>
                        FileTransfer.SendAsync(call.RequestStream, path, new FileChunk { File = path },
                            n => report(n, size), ct));
                    await call.RequestStream.CompleteAsync();
                }
                catch (RpcException)
                {
                    // The agent ended the call early (it refused the file): its answer below says why.
                    ct.ThrowIfCancellationRequested();
                }
                var r = await call.ResponseAsync;
                if (json)
                    Output.WriteJson(new ResumeJson(r.Name, r.Locator, r.Host, r.Pid, r.RestoreMs, r.TotalMs, r.Flushed,
                        r.Dropped, r.Bytes), CliJson.Default.ResumeJson);
                else
                    Console.WriteLine($"capsule {r.Name} resumed on {r.Host} at {r.Locator} (pid {r.Pid}) " +
                        $"in {r.TotalMs} ms; {r.Flushed} held packets delivered, {r.Dropped} dropped while it slept");
                return 0;
            }));
            yield return cmd;
        }
        {
            var file = new Argument<string>("capsule-or-file")
            {
                Description = "A capsule's name, or a file written by `capsule suspend`",
            };
            var cmd = new Command("inspect",
                "Show a capsule (its namespaces, users, root, capabilities), or what a suspend file holds")
            {
                file, CommandTree.JsonOption
            };
            cmd.SetAction((pr, ct) => CommandTree.Run(async () =>
            {
                var what = pr.GetValue(file)!;
                // A name never holds a '/'; a file in the current folder is a file when it is there.
                if (!what.Contains('/') && !File.Exists(what))
                    return await InspectCapsule.RunAsync(CommandTree.SessionOf(pr), what,
                        pr.GetValue(CommandTree.JsonOption), ct);
                var path = Path.GetFullPath(what);
                SuspendMeta meta;
                string signer;
                try
                {
                    await using var f = await SuspendFile.OpenAsync(path, ct);
                    await f.VerifyAsync(ct); // the checksum, and the signature over it when there is one
                    (meta, signer) = (f.Meta, f.SignerName);
                }
                catch (Exception e) when (e is InvalidDataException or FileNotFoundException)
                {
                    throw new UserError(e.Message);
                }
                var size = new FileInfo(path).Length;
                if (pr.GetValue(CommandTree.JsonOption))
                {
                    Output.WriteJson(new InspectJson(meta, size, "ok", signer), CliJson.Default.InspectJson);
                    return 0;
                }
                var t = Output.Table("", "");
                t.AddRow("capsule", Markup.Escape(meta.Name));
                t.AddRow("locator", meta.Locator);
                t.AddRow("suspended",
                    $"{meta.Created:yyyy-MM-dd HH:mm:ss} UTC from {Markup.Escape(meta.SuspendedFrom)}");
                t.AddRow("size", $"{size / 1024.0:F0} KiB (checksum ok, format {meta.Format})");
                // The signer's claim: the chain to the cluster CA is checked by the agent that resumes the file.
                t.AddRow("signed by", Markup.Escape(signer));
                t.AddRow("command", Markup.Escape(string.Join(' ', meta.Command)));
                // A container's: the lower layer the resuming host must have, the host ids its files belong to.
                t.AddRow("root", meta.Root is { } r
                    ? Markup.Escape($"own: {r.Lower} below its writable layer; " +
                        $"root is host id {r.IdBase} (ids {r.IdBase}-{(long)r.IdBase + r.IdCount - 1})")
                    : "the host's");
                if (meta.Limits is { } l)
                    t.AddRow("limits", Markup.Escape(InspectCapsule.Limits(l.MemoryBytes, l.CpuMillis, l.Pids)));
                t.AddRow("processes",
                    Markup.Escape(string.Join('\n', meta.Processes.Select(p => $"{p.Pid,5}  {p.Command}"))));
                t.AddRow("connections",
                    Markup.Escape(meta.Connections.Count == 0 ? "none" : string.Join('\n', meta.Connections)));
                AnsiConsole.Write(t);
                return 0;
            }));
            yield return cmd;
        }
    }

    /// <summary>
    /// Takes the file a suspend (or a fetch) streams into a temporary file beside <paramref name="file"/>,
    /// checks it (size, transfer checksum, the file's own checksum, the suspension it announced) and
    /// renames it into place: <paramref name="file"/> appears whole or not at all. On any failure,
    /// Ctrl-C included, the partial file goes, and if the capsule was suspended the error says where
    /// its host keeps the file (the host deletes it only once confirmed, so nothing is lost).
    /// </summary>
    static async Task<SuspendResult> ReceiveAsync(IAsyncStreamReader<FileChunk> from, CapsuleRecord c, string file,
        bool fetching, bool show, CancellationToken ct)
    {
        var tmp = Path.Combine(Path.GetDirectoryName(file)!, $".{Path.GetFileName(file)}.{Guid.NewGuid():n}.partial");
        SuspendResult? head = null;
        try
        {
            // The capsule's memory, its secrets included: for the operator alone from its creation (mode 0600).
            await using (var fs = PrivateFiles.CreateNew(tmp))
            {
                await WithProgress(show, (fetching ? "fetching " : "suspending ") + c.Name, async report =>
                {
                    // The first message comes once the capsule is frozen and its file written on its host.
                    if (!await from.MoveNext(ct)) throw new UserError($"{c.Host} ended the call without the file");
                    head = from.Current.Suspended
                        ?? throw new UserError($"{c.Host} answered without saying what it suspended");
                    var size = from.Current.Size;
                    report(0, size);
                    await FileTransfer.ReceiveAsync(from, size, fs, n => report(n, size), ct);
                });
                fs.Flush(flushToDisk: true);
            }
            var meta = await SuspendFile.ReadMetaAsync(tmp, verify: true, ct, shownAs: "the received file");
            if (meta.Id != head!.Id || meta.Name != c.Name)
                throw new InvalidDataException($"the received file holds suspension {meta.Id} of {meta.Name}, " +
                    $"not {head.Id} of {c.Name}");
            File.Move(tmp, file, overwrite: false);
            return head;
        }
        catch (Exception e)
        {
            File.Delete(tmp);
            var again = $"`capsule suspend {c.Name} --to {file} --fetch`";
            if (head is not null)
                Output.Error($"capsule {c.Name} is suspended, but its file did not reach {file}; " +
                    $"{c.Host} keeps it ({head.Kept}) until it is fetched: {again}");
            else if (!fetching && e is OperationCanceledException
                || e is RpcException { StatusCode: StatusCode.Cancelled or StatusCode.Unavailable })
                Output.Error($"interrupted before the file came: capsule {c.Name} may be suspended nevertheless " +
                    $"(`capsule ls` says); if so, {c.Host} keeps its file until it is fetched: {again}");
            if (e is InvalidDataException or IOException) throw new UserError(e.Message);
            ct.ThrowIfCancellationRequested(); // Ctrl-C: "cancelled", exit 130, not gRPC's wording
            throw;
        }
    }

    /// <summary>A transfer's progress bar while a person watches (a terminal, no --json); nothing otherwise.</summary>
    static async Task WithProgress(bool show, string label, Func<Action<long, long>, Task> work)
    {
        if (!show || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            await work((_, _) => { });
            return;
        }
        await AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                new DownloadedColumn(), new TransferSpeedColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(Markup.Escape(label));
                task.IsIndeterminate = true; // a suspend's dump comes first, of no known length
                await work((done, total) =>
                {
                    if (total <= 0) return;
                    task.IsIndeterminate = false;
                    task.MaxValue = total;
                    task.Value = done;
                });
            });
    }

    /// <summary>
    /// A token that Ctrl-C (SIGINT) or SIGTERM cancels instead of ending the process there and then, so
    /// that a transfer deletes its partial file on the way out. A second Ctrl-C ends it at once.
    /// </summary>
    sealed class Interrupts : IDisposable
    {
        readonly CancellationTokenSource _cts;
        readonly PosixSignalRegistration[] _signals;

        public Interrupts(CancellationToken outer)
        {
            _cts = CancellationTokenSource.CreateLinkedTokenSource(outer);
            _signals = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop),
                PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop)];
        }

        public CancellationToken Token => _cts.Token;

        void Stop(PosixSignalContext context)
        {
            context.Cancel = !_cts.IsCancellationRequested;
            _cts.Cancel();
        }

        public void Dispose()
        {
            foreach (var s in _signals) s.Dispose();
            _cts.Dispose();
        }
    }
}
