using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Spectre.Console;

namespace Capsule.Cli;

public static class Output
{
    /// <summary>Prints one `--json` answer; its shape is source-generated in <see cref="CliJson"/>.</summary>
    public static void WriteJson<T>(T value, JsonTypeInfo<T> shape) =>
        Console.Out.WriteLine(JsonSerializer.Serialize(value, shape));

    public static void Error(string message) => Console.Error.WriteLine("capsule: " + message);

    public static void Step(string message) => AnsiConsole.MarkupLine($"[grey]•[/] {Markup.Escape(message)}");

    public static Table Table(params string[] columns)
    {
        var t = new Table().Border(TableBorder.Simple);
        foreach (var c in columns) t.AddColumn(c);
        return t;
    }
}
