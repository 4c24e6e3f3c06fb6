using Capsule.Core;

namespace Capsule.Core.Tests;

public sealed class ByteSizeTests
{
    [Theory]
    [InlineData("4096", 4096L)]
    [InlineData("512K", 512L << 10)]
    [InlineData("256M", 256L << 20)]
    [InlineData("256MiB", 256L << 20)]
    [InlineData("2g", 2L << 30)]
    [InlineData(" 1T ", 1L << 40)]
    public void Sizes_people_write_are_read_in_binary_units(string text, long bytes) =>
        Assert.Equal(bytes, ByteSize.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("M")]
    [InlineData("-1M")]
    [InlineData("1.5G")]
    [InlineData("12X")]
    [InlineData("99999999999999999999")]
    [InlineData("9000000T")]
    public void Anything_else_is_refused(string text) => Assert.Null(ByteSize.Parse(text));

    [Fact]
    public void Property_a_number_with_a_suffix_is_that_number_times_its_unit()
    {
        Gen.Select(Gen.Long[0, 1L << 20], Gen.Int[0, 4]).Sample((n, unit) =>
        {
            var text = n + new[] { "", "K", "M", "G", "T" }[unit];
            Assert.Equal(n << (10 * unit), ByteSize.Parse(text));
        }, iter: 2_000);
    }
}
