using BenchmarkDotNet.Attributes;
using Capsule.Core;

namespace Capsule.Benchmarks;

/// <summary>
/// The control path: the agent rebuilds its whole translation table on every directory change, so
/// this is the cost of one change as seen by one host (10,000 running capsules on 100 hosts).
/// </summary>
[MemoryDiagnoser]
public class TableBuildBenchmarks
{
    DirectoryState _state = new(Fixture.Pool);

    [GlobalSetup]
    public void Setup()
    {
        _state = Fixture.Build(10_000, 100);
        var t = From();
        if (t.Count != 9_900) throw new InvalidOperationException($"expected 9,900 remote capsules, got {t.Count}");
    }

    [Benchmark(Description = "TranslationTable.From (10,000 capsules, 100 hosts)")]
    public TranslationTable From() => TranslationTable.From(_state, Fixture.HostName(0));
}
