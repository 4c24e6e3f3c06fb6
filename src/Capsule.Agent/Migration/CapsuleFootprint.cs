using System.Globalization;
using Capsule.Agent.Checkpoint;

namespace Capsule.Agent.Migration;

/// <summary>
/// What a move of a capsule will need at the target, measured at the source while it runs: its resident memory
/// (what CRIU's pages will be, about) and the bytes of its image on disk.
/// </summary>
internal static class CapsuleFootprint
{
    /// <summary>The resident memory of the tree rooted at <paramref name="pid"/> (VmRSS of each process).</summary>
    public static long ResidentBytes(int pid)
    {
        long total = 0;
        var seen = new HashSet<int>();
        var todo = new Stack<int>([pid]);
        while (todo.TryPop(out var p))
        {
            if (!seen.Add(p)) continue;
            total += VmRssKiB(p) * 1024;
            foreach (var child in Children(p)) todo.Push(child);
        }
        return total;
    }

    /// <summary>Bytes of the regular files under <paramref name="dir"/> (0 when it is gone).</summary>
    public static long FolderBytes(string dir, Func<string, bool>? include = null)
    {
        if (!Directory.Exists(dir)) return 0;
        long total = 0;
        foreach (var f in new DirectoryInfo(dir).EnumerateFiles("*", SearchOption.AllDirectories))
            if (include is null || include(Path.GetRelativePath(dir, f.FullName)))
                total += f.Length;
        return total;
    }

    /// <summary>CRIU's images but the memory that went ahead: the rest of what the transfer sends.</summary>
    public static long ImageBytes(string images) =>
        FolderBytes(images, f => f != Criu.PageStreamFile);

    static long VmRssKiB(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            // Gone meanwhile: it has no memory to move.
        }
        return 0;
    }

    static IEnumerable<int> Children(int pid)
    {
        var found = new List<int>();
        try
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
                foreach (var s in File.ReadAllText(Path.Combine(task, "children"))
                             .Split(' ', StringSplitOptions.RemoveEmptyEntries))
                    found.Add(int.Parse(s, CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return found;
    }
}
