using System.Diagnostics;

namespace Capsule.Agent.Linux;

/// <summary>
/// Every child process of the agent starts here. .NET opens its own descriptors close-on-exec, so a
/// child inherits only stdio; the one exception is a descriptor handed to a child on purpose (CRIU's
/// page socket, <see cref="Checkpoint.PageSocket"/>), which must be inheritable at the moment of that
/// child's exec and at no other child's: a capsule started meanwhile would carry it, and CRIU would
/// later find a socket in the capsule that it cannot move. So starts are serialised, and the
/// descriptor is inheritable only inside its own start.
/// </summary>
internal static class Spawn
{
    static readonly Lock Gate = new();

    public static Process Start(ProcessStartInfo psi, int inherit = -1)
    {
        lock (Gate)
        {
            if (inherit >= 0) Native.ThrowIfFailed(Native.fcntl(inherit, Native.F_SETFD, 0), "fcntl F_SETFD");
            try
            {
                return Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
            }
            finally
            {
                if (inherit >= 0) Native.fcntl(inherit, Native.F_SETFD, Native.FD_CLOEXEC);
            }
        }
    }
}
