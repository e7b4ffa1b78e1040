using FedLora.Lora.Safetensors;

namespace FedLora.Model.Tests.Safetensors;

/// <summary>Files written by Python (tests/pytorch/make_safetensors_fixture.py), read by the C# reader.</summary>
public class PythonFixtureTests
{
    private static readonly SafetensorsFile File = SafetensorsFile.Load(RepoPaths.Fixture("python_dtypes.safetensors"));

    [Fact]
    public void Load_PythonFile_ReadsMetadataAndF32()
    {
        Assert.Equal("python", File.Metadata["writer"]);
        Assert.Equal("1", File.Metadata["version"]);
        var values = File.ReadFloats("x.F32");
        Assert.Equal([4, 4], File.GetInfo("x.F32").Shape);
        Assert.Equal(-2.5f, values[3]);
        Assert.Equal(0.1f, values[4]);
        Assert.Equal(float.PositiveInfinity, values[12]);
        Assert.Equal(7.5f, File.ReadFloats("scalar")[0]);
        Assert.Equal([0, 3], File.GetInfo("empty").Shape);
        Assert.Empty(File.ReadFloats("empty"));
    }

    [Theory]
    [InlineData("F16")]
    [InlineData("BF16")]
    [InlineData("F64")]
    public void ReadFloats_PythonNarrowOrWideFloats_MatchPyTorchConversion(string dtype)
    {
        Assert.Equal(Enum.Parse<SafetensorsDType>(dtype), File.GetInfo($"x.{dtype}").DType);
        var converted = File.ReadFloats($"x.{dtype}");
        var expected = File.ReadFloats($"x.{dtype}.as_f32");
        Assert.Equal(expected.Length, converted.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(converted[i]),
                $"x.{dtype}[{i}]: C# gives {converted[i]:R}, PyTorch {expected[i]:R}");
        }
    }

    [Theory]
    [InlineData("tokens.I32")]
    [InlineData("tokens.I64")]
    public void ReadInt32s_PythonIntegers_MatchValues(string name)
    {
        Assert.Equal([0, 1, 255, 256, -1, int.MaxValue, int.MinValue, 42], File.ReadInt32s(name));
    }
}
