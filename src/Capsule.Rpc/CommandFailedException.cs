namespace Capsule.Rpc;

/// <summary>
/// A step of the plumbing that failed: a command (ip, criu, nsenter), a netlink request, a sysctl. Here, below
/// the agent, so the CLI's error handling (Capsule.Cli's CommandTree.Run) can name it without the agent.
/// </summary>
public sealed class CommandFailedException(string message) : Exception(message);
