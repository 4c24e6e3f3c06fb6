using System.Text.RegularExpressions;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// docs/deploy.md, run as written: each of its sh blocks on the simulated machines it names (blocks for
/// several machines on all of them at once, as an operator with a terminal on each would), in order, until
/// its last step shows the moved capsule. Two stand-ins, both in tests/Capsule.Lab.Tests/deploy: systemctl
/// (systemd is not PID 1 here; it runs the units' own ExecStart, Type=notify included) and apt-get (the
/// machines have no package mirror; it checks the packages are installed). The build machine's step
/// (on=build) is this machine's scripts/setup.sh, which the suite's entry has run; its copy to each
/// machine is the harness's.
/// </summary>
[Collection("lab")]
public sealed class DeployDocTests
{
    static readonly (string Name, string Address)[] Machines =
        [("h1", "198.18.0.1"), ("h2", "198.18.0.2"), ("h3", "198.18.0.3"), ("op", "198.18.0.100")];

    static readonly string[] Hosts = ["h1", "h2", "h3"];

    [Fact]
    public void Every_sh_block_of_docs_deploy_md_says_where_it_runs_and_names_a_known_machine()
    {
        var steps = DeployDoc.Parse(File.ReadAllText(DeployDoc.FilePath));
        Assert.True(steps.Count >= 6, $"only {steps.Count} steps");
        foreach (var s in steps)
            Assert.True(s.On is "build" or "hosts" || Machines.Any(m => m.Name == s.On),
                $"docs/deploy.md:{s.Line}: on={s.On} names no machine of the document's table");
    }

    [Fact]
    public async Task Docs_deploy_md_installs_three_hosts_and_an_operator_machine_that_moves_a_capsule()
    {
        var doc = DeployDoc.FilePath;
        var repo = Path.GetDirectoryName(Path.GetDirectoryName(doc))!;
        var steps = DeployDoc.Parse(await File.ReadAllTextAsync(doc));
        var files = new Dictionary<string, string>
        {
            [Cli.Binary] = "capsule",
            [Path.Combine(repo, "deploy")] = "deploy",
        };
        await using var lab = await DeployMachines.StartAsync(Machines, files);
        var last = "";
        foreach (var step in steps.Where(s => s.On != "build"))
        {
            var on = step.On == "hosts" ? Hosts : [step.On];
            var results = await Task.WhenAll(on.Select(m => lab.RunAsync(m, step.Script)));
            for (var i = 0; i < on.Length; i++)
                Assert.True(results[i].Code == 0,
                    $"docs/deploy.md:{step.Line} failed on {on[i]} (exit {results[i].Code}):\n{step.Script}\n" +
                    $"stdout: {results[i].Out}\nstderr: {results[i].Err}\n" +
                    // The operator's commands fail for what happened on the hosts: their journals too.
                    string.Join('\n', Hosts.Append(on[i]).Distinct().Select(m => $"[{m}]\n{lab.JournalOf(m)}")));
            last = results[^1].Out;
        }
        // The document's last step: `capsule ls` on the operator's machine shows web running on h3, where it
        // resumed from the file the operator's machine kept (no host shares a folder with it).
        Assert.Matches(new Regex(@"\bweb\b.*\bh3\b.*\brunning\b"), last);

        // etcd's users, as the document set them up: a host's certificate gets it in, but it may not write
        // another host's record (which would send that host's traffic to it).
        var forged = await lab.RunAsync("h2", "ETCDCTL_API=3 etcdctl --endpoints=https://198.18.0.2:2379 " +
            "--cacert=/etc/capsule/tls/ca.crt --cert=/etc/capsule/tls/h2.crt --key=/etc/capsule/tls/h2.key " +
            "put /capsule/hosts/h1 '{}'");
        Assert.True(forged.Code != 0, $"h2 rewrote h1's host record in etcd: {forged.Out}");
        Assert.Contains("permission denied", forged.Err);
    }
}
