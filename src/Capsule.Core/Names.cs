namespace Capsule.Core;

/// <summary>
/// Rules for capsule and host names. They end up in namespace names, file names and interface
/// names, so they are kept short and to a safe alphabet.
/// </summary>
public static class Names
{
    public const int MaxCapsuleName = 32;
    public const int MaxHostName = 16;

    public static string? CapsuleNameError(string? name) => Check(name, MaxCapsuleName, "capsule");
    public static string? HostNameError(string? name) => Check(name, MaxHostName, "host");

    static string? Check(string? name, int max, string what)
    {
        if (string.IsNullOrEmpty(name)) return $"a {what} name is required";
        if (name.Length > max) return $"{what} name '{name}' is longer than {max} characters";
        if (!char.IsAsciiLetterLower(name[0])) return $"{what} name '{name}' must start with a lower-case letter";
        foreach (var c in name)
            if (!(char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-'))
                return $"{what} name '{name}' may only hold a-z, 0-9 and '-'";
        return null;
    }
}
