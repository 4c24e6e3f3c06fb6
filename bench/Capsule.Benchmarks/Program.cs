using System.Reflection;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

namespace Capsule.Benchmarks;

public static class Program
{
    /// <summary>
    /// Any BenchmarkDotNet command line works, e.g. <c>--filter '*'</c> for the full run or
    /// <c>--filter '*' --job short</c> for a quick CI smoke run; <c>--list flat</c> lists the benchmarks.
    /// </summary>
    public static void Main(string[] args)
    {
        var config = DefaultConfig.Instance;
        if (!args.Any(a => a is "--artifacts" || a.StartsWith("--artifacts=", StringComparison.Ordinal))
            && DefaultArtifacts() is { } path)
            config = config.WithArtifactsPath(path);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
    }

    /// <summary>
    /// The repo's artifacts/ folder (from Directory.Build.props, baked in at build time) + benchmarks/.
    /// </summary>
    static string? DefaultArtifacts()
    {
        var root = typeof(Program).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "CapsuleArtifactsPath")?.Value;
        return string.IsNullOrEmpty(root) ? null : Path.Combine(root, "benchmarks");
    }
}
