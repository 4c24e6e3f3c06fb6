using System.Reflection;
using Xunit;

namespace Capsule.Lab.Tests;

/// <summary>
/// The layering of the assemblies (README.md, "How it is built") as a test that can fail: each may use only
/// those below it. The directory never uses the agent; the CLI is a client (gRPC and the directory's client)
/// that uses neither the agent nor the lab nor the daemons' start-up (Capsule.Hosting, ASP.NET Core); the
/// core uses nothing of Capsule. Read from the compiled assemblies' references, so a type used across a line
/// shows here even when a project file allows it.
/// </summary>
public sealed class ArchitectureTests
{
    static readonly Assembly Core = typeof(Capsule.Core.Locator).Assembly;
    static readonly Assembly Rpc = typeof(Capsule.Rpc.Channels).Assembly;
    static readonly Assembly Hosting = typeof(Capsule.Hosting.ConfigLoader).Assembly;
    static readonly Assembly Directory = typeof(Capsule.Dir.IDirectory).Assembly;
    static readonly Assembly Agent = typeof(Capsule.Agent.AgentHost).Assembly;
    static readonly Assembly Cli = typeof(Capsule.Cli.CommandTree).Assembly;
    static readonly Assembly Lab = typeof(LabPaths).Assembly;
    static readonly Assembly Trust = typeof(Capsule.Trust.ClusterCa).Assembly;

    static string[] CapsuleReferences(Assembly a) =>
        [.. a.GetReferencedAssemblies().Select(r => r.Name!)
            .Where(n => n.StartsWith("Capsule", StringComparison.Ordinal) || n == "capsule").Order()];

    static string[] AspNetCoreReferences(Assembly a) =>
        [.. a.GetReferencedAssemblies().Select(r => r.Name!)
            .Where(n => n.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal)
                || n.StartsWith("Grpc.AspNetCore", StringComparison.Ordinal))];

    static void UsesOnly(Assembly a, params Assembly[] allowed)
    {
        var names = allowed.Select(x => x.GetName().Name!).ToHashSet();
        var beyond = CapsuleReferences(a).Where(n => !names.Contains(n)).ToArray();
        Assert.True(beyond.Length == 0, $"{a.GetName().Name} uses {string.Join(", ", beyond)}");
    }

    [Fact]
    public void Assemblies_are_the_layers() =>
        Assert.Equal(["Capsule.Agent", "Capsule.Cli", "Capsule.Core", "Capsule.Directory", "Capsule.Hosting",
            "Capsule.Lab", "Capsule.Rpc", "Capsule.Trust"],
            new[] { Core, Rpc, Hosting, Directory, Agent, Cli, Lab, Trust }.Select(a => a.GetName().Name!).Order());

    [Fact]
    public void Core_uses_no_other_capsule_assembly() => UsesOnly(Core);

    [Fact]
    public void Trust_uses_no_other_capsule_assembly() => UsesOnly(Trust);

    [Fact]
    public void Rpc_uses_only_the_core_and_trust() => UsesOnly(Rpc, Core, Trust);

    [Fact]
    public void Rpc_uses_no_aspnetcore() => Assert.Empty(AspNetCoreReferences(Rpc));

    [Fact]
    public void Hosting_uses_only_trust() => UsesOnly(Hosting, Trust);

    [Fact]
    public void Directory_does_not_use_the_agent() => UsesOnly(Directory, Core, Rpc, Hosting, Trust);

    [Fact]
    public void Agent_uses_neither_the_cli_nor_the_lab() => UsesOnly(Agent, Core, Rpc, Hosting, Directory, Trust);

    [Fact]
    public void Cli_uses_neither_the_agent_nor_the_lab() => UsesOnly(Cli, Core, Rpc, Directory, Trust);

    [Fact]
    public void Cli_uses_neither_hosting_nor_aspnetcore()
    {
        Assert.DoesNotContain(Hosting.GetName().Name!, CapsuleReferences(Cli));
        Assert.Empty(AspNetCoreReferences(Cli));
    }

    [Fact]
    public void Lab_does_not_use_the_host() => UsesOnly(Lab, Core, Rpc, Hosting, Directory, Agent, Cli, Trust);
}
