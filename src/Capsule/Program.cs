using System.CommandLine;
using Capsule.Cli;

namespace Capsule;

internal static class Program
{
    static async Task<int> Main(string[] args)
    {
        var root = CommandTree.Build();
        return await root.Parse(args).InvokeAsync();
    }
}
