using System.CommandLine;
using Capsule.Core;
using Capsule.Dir;
using Capsule.Dir.Etcd;

namespace Capsule.Cli;

/// <summary>
/// Setting up an etcd directory, once per cluster: `capsule directory init` writes the locator pool,
/// `capsule directory import` carries an embedded directory's state into etcd (moving a small
/// installation onto a cluster). Both speak to etcd directly; no agent needs to run.
/// </summary>
public static class DirectoryAdmin
{
    static Option<string> EtcdOption() => new("--etcd")
    {
        Required = true,
        Description = "The etcd members, comma-separated (https://addr:2379, http://addr:2379 or unix:/path)",
    };

    public static Command Init()
    {
        var etcd = EtcdOption();
        var pool = new Option<string>("--pool")
            { DefaultValueFactory = _ => "100.64.0.0/16", Description = "The locator pool, an IPv4 prefix" };
        var init = new Command("init",
            "Give an etcd directory its locator pool (once; again with the same pool: no-op)")
        {
            etcd, pool,
        };
        var credentials = new Credentials();
        credentials.AddTo(init);
        init.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            credentials.Use(pr);
            var p = ParsePool(pr.GetValue(pool)!);
            await using var d = Open(pr.GetValue(etcd)!);
            await d.InitAsync(p, ct);
            Console.WriteLine($"etcd directory ready: pool {p}, keys under {d.KeyPrefix} ({d.Describe()})");
            Console.WriteLine($"agents: --directory {DirectoryClient.EtcdScheme}{pr.GetValue(etcd)}");
            return 0;
        }));
        return init;
    }

    public static Command Import()
    {
        var etcd = EtcdOption();
        var state = new Option<string>("--state")
            { Required = true, Description = "The embedded directory's state folder (its directory.json)" };
        var import = new Command("import",
            "Copy an embedded directory's hosts and capsules into an empty etcd directory (stop that directory first)")
        {
            etcd, state,
        };
        var credentials = new Credentials();
        credentials.AddTo(import);
        import.SetAction((pr, ct) => CommandTree.Run(async () =>
        {
            credentials.Use(pr);
            var s = EmbeddedDirectory.ReadState(pr.GetValue(state)!);
            await using var d = Open(pr.GetValue(etcd)!);
            await d.ImportAsync(s, ct);
            Console.WriteLine($"imported {s.Hosts.Count} hosts and {s.Capsules.Count} capsules (pool {s.Pool}) " +
                $"into {d.Describe()}");
            return 0;
        }));
        return import;
    }

    static EtcdDirectory Open(string members) => new(DirectoryClient.SplitMembers(members));

    static Prefix ParsePool(string text) => Prefix.TryParse(text, out var p)
        ? p
        : throw new UserError($"--pool {text} is not an IPv4 prefix such as 100.64.0.0/16");
}
