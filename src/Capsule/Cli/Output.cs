using System.Text.Json;
using Spectre.Console;

namespace Capsule.Cli;

internal static class Output
{
    public static readonly JsonSerializerOptions Json = new()
        { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static void WriteJson<T>(T value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, Json));

    public static void Error(string message) => Console.Error.WriteLine("capsule: " + message);

    public static void Step(string message) => AnsiConsole.MarkupLine($"[grey]•[/] {Markup.Escape(message)}");

    public static Table Table(params string[] columns)
    {
        var t = new Table().Border(TableBorder.Simple);
        foreach (var c in columns) t.AddColumn(c);
        return t;
    }
}
