using System.CommandLine;

namespace Capsule.Lab;

/// <summary>`capsule bench ...`: benchmarks that build their own lab and print a table.</summary>
public static partial class Bench
{
    public static Command Build()
    {
        var bench = new Command("bench", "Benchmarks that build their own lab and print a table");
        bench.Subcommands.Add(Dataplane());
        bench.Subcommands.Add(Migrate());
        bench.Subcommands.Add(Soak());
        bench.Subcommands.Add(DirectoryBench());
        bench.Subcommands.Add(CliSpeed());
        bench.Subcommands.Add(DrainBench());
        return bench;
    }
}
