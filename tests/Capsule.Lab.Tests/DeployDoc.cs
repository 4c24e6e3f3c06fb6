using System.Text.RegularExpressions;

namespace Capsule.Lab.Tests;

/// <summary>
/// The runnable steps of docs/deploy.md: every fenced <c>sh</c> block, in order, with the machines its
/// info string names (<c>```sh on=hosts</c>). A block that names none is an error: each one either runs
/// or says why it cannot (<c>on=build</c>, the build machine, which is this one).
/// </summary>
public static partial class DeployDoc
{
    public sealed record Step(int Line, string On, string Script);

    public static string FilePath
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "docs", "deploy.md")))
                    return Path.Combine(d.FullName, "docs", "deploy.md");
            throw new FileNotFoundException("docs/deploy.md not found above " + AppContext.BaseDirectory);
        }
    }

    public static List<Step> Parse(string markdown)
    {
        var steps = new List<Step>();
        var lines = markdown.Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            var open = Fence().Match(lines[i]);
            if (!open.Success) continue;
            var start = i;
            var body = new List<string>();
            for (i++; i < lines.Length && !lines[i].StartsWith("```", StringComparison.Ordinal); i++)
                body.Add(lines[i]);
            if (open.Groups["lang"].Value != "sh") continue;
            var on = open.Groups["on"].Value;
            if (on.Length == 0)
                throw new FormatException($"docs/deploy.md:{start + 1}: a sh block must say where it runs (on=...)");
            steps.Add(new Step(start + 1, on, string.Join('\n', body) + "\n"));
        }
        return steps;
    }

    [GeneratedRegex(@"^```(?<lang>\w*)(?:\s+on=(?<on>[\w-]+))?\s*$")]
    private static partial Regex Fence();
}
