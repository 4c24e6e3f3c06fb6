using System.CommandLine;

namespace Capsule.Cli;

internal static partial class Bench
{
    static Command Dataplane()
    {
        var c = new Command("dataplane", "Throughput and round-trip time: underlay vs kernel VXLAN vs the Capsule overlay");
        c.SetAction((pr, ct) => CommandTree.Run(() => throw new UserError("not written yet")));
        return c;
    }
}
