using System.Collections.Concurrent;
using Capsule.Agent.Linux;

namespace Capsule.Agent.Faults;

internal enum FaultAction { Fail, Crash, Delay, Skip, Corrupt }

/// <summary>A fault fired on purpose at a named point (a test's doing, never the system's).</summary>
internal sealed class InjectedFaultException(string point) : Exception($"{point} failed on purpose (fault injection)");

/// <summary>
/// Faults armed at named points (<see cref="FaultPoints"/>). Off unless the agent was started with
/// CAPSULE_FAULT_INJECTION=1: then the Faults service arms them. Unarmed, a hit costs one
/// dictionary look-up on the control path; the data plane never consults it.
/// </summary>
public sealed class FaultInjector
{
    public const string EnvironmentSwitch = "CAPSULE_FAULT_INJECTION";

    sealed class Armed(FaultAction action, int times, TimeSpan delay)
    {
        public FaultAction Action { get; } = action;
        public TimeSpan Delay { get; } = delay;
        int _left = times;
        public bool Take() => Interlocked.Decrement(ref _left) >= 0;
    }

    readonly ConcurrentDictionary<string, Armed> _armed = new();

    public static bool EnabledByEnvironment => Environment.GetEnvironmentVariable(EnvironmentSwitch) == "1";

    internal void Arm(string point, FaultAction action, int times, TimeSpan delay)
    {
        if (!FaultPoints.All.Contains(point))
            throw new ArgumentException($"no fault point '{point}'; known: {string.Join(", ", FaultPoints.All)}");
        _armed[point] = new Armed(action, Math.Max(times, 1), delay);
    }

    public void Clear() => _armed.Clear();

    /// <summary>Fires what is armed at <paramref name="point"/>: throws, kills this agent, or waits.</summary>
    public async Task HitAsync(string point)
    {
        if (!Take(point, out var a)) return;
        switch (a.Action)
        {
            case FaultAction.Fail:
                throw new InjectedFaultException(point);
            case FaultAction.Crash:
                // As a power cut or the OOM killer would: no tidying, no goodbye.
                Native.kill(Environment.ProcessId, 9);
                await Task.Delay(Timeout.Infinite);
                break;
            case FaultAction.Delay:
                await Task.Delay(a.Delay);
                break;
        }
    }

    /// <summary>True once per arming when <paramref name="point"/> is armed with <paramref name="action"/>.</summary>
    internal bool Fires(string point, FaultAction action) =>
        _armed.TryGetValue(point, out var a) && a.Action == action && Take(point, out _);

    bool Take(string point, out Armed armed)
    {
        armed = null!;
        if (_armed.IsEmpty || !_armed.TryGetValue(point, out var a)) return false;
        if (!a.Take())
        {
            _armed.TryRemove(point, out _);
            return false;
        }
        armed = a;
        return true;
    }
}
