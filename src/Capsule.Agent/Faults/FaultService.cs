using Capsule.FaultProtos;
using Grpc.Core;

namespace Capsule.Agent.Faults;

/// <summary>Arms faults; mapped only on an agent started with fault injection on.</summary>
internal sealed class FaultService(FaultInjector faults) : FaultProtos.Faults.FaultsBase
{
    public override Task<FaultsEmpty> Arm(ArmRequest request, ServerCallContext context)
    {
        if (!Enum.TryParse<FaultAction>(request.Action, ignoreCase: true, out var action))
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"no fault action '{request.Action}'"));
        try
        {
            faults.Arm(request.Point, action, request.Times, TimeSpan.FromMilliseconds(request.DelayMs));
        }
        catch (ArgumentException e)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, e.Message));
        }
        return Task.FromResult(new FaultsEmpty());
    }

    public override Task<FaultsEmpty> Clear(FaultsEmpty request, ServerCallContext context)
    {
        faults.Clear();
        return Task.FromResult(new FaultsEmpty());
    }
}
