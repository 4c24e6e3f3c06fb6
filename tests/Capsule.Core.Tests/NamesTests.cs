namespace Capsule.Core.Tests;

public class NamesTests
{
    [Theory]
    [InlineData("a")]
    [InlineData("web")]
    [InlineData("web-1")]
    [InlineData("db2")]
    [InlineData("a-b-c-0-9")]
    [InlineData("abcdefghijklmnopqrstuvwxyz012345")] // exactly 32
    public void Valid_capsule_names(string name) => Assert.Null(Names.CapsuleNameError(name));

    [Theory]
    [InlineData("h1")]
    [InlineData("node-a")]
    [InlineData("abcdefghijklmnop")] // exactly 16
    public void Valid_host_names(string name) => Assert.Null(Names.HostNameError(name));

    [Theory]
    [InlineData(null, "required")]
    [InlineData("", "required")]
    [InlineData("Web", "lower-case letter")]
    [InlineData("1web", "lower-case letter")]
    [InlineData("-web", "lower-case letter")]
    [InlineData("é", "lower-case letter")]
    [InlineData("webÉ", "a-z, 0-9 and '-'")]
    [InlineData("web_1", "a-z, 0-9 and '-'")]
    [InlineData("web.1", "a-z, 0-9 and '-'")]
    [InlineData("web 1", "a-z, 0-9 and '-'")]
    [InlineData("web/1", "a-z, 0-9 and '-'")]
    [InlineData("weB", "a-z, 0-9 and '-'")]
    [InlineData("abcdefghijklmnopqrstuvwxyz0123456", "longer than 32")] // 33
    public void Invalid_capsule_names(string? name, string expected)
    {
        var e = Names.CapsuleNameError(name);
        Assert.NotNull(e);
        Assert.Contains(expected, e);
        Assert.Contains("capsule", e);
    }

    [Theory]
    [InlineData(null, "required")]
    [InlineData("", "required")]
    [InlineData("H1", "lower-case letter")]
    [InlineData("1h", "lower-case letter")]
    [InlineData("h_1", "a-z, 0-9 and '-'")]
    [InlineData("abcdefghijklmnopq", "longer than 16")] // 17
    public void Invalid_host_names(string? name, string expected)
    {
        var e = Names.HostNameError(name);
        Assert.NotNull(e);
        Assert.Contains(expected, e);
        Assert.Contains("host", e);
    }

    [Fact]
    public void Host_limit_is_tighter_than_capsule_limit()
    {
        var twenty = new string('a', 20);
        Assert.Null(Names.CapsuleNameError(twenty));
        Assert.NotNull(Names.HostNameError(twenty));
    }

    [Fact]
    public void Property_accepted_names_only_use_the_safe_alphabet()
    {
        var alphabet = Gen.Char["aZ0-_.é z9"];
        alphabet.Array[0, 40].Select(a => new string(a)).Sample(s =>
        {
            var ok = Names.CapsuleNameError(s) is null;
            var expected = s.Length is >= 1 and <= Names.MaxCapsuleName
                && s[0] is >= 'a' and <= 'z'
                && s.All(c => c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-');
            Assert.Equal(expected, ok);
        }, iter: 5_000);
    }
}
