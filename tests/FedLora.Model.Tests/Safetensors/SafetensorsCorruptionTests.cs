using System.Buffers.Binary;
using System.Text;
using FedLora.Lora.Safetensors;

namespace FedLora.Model.Tests.Safetensors;

/// <summary>Every malformed file is refused with a message naming the source, the tensor and the problem.</summary>
public class SafetensorsCorruptionTests
{
    private const string Source = "corrupt.safetensors";

    /// <summary>8-byte little-endian length, the header text, then <paramref name="dataBytes"/> zero bytes.</summary>
    private static byte[] Build(string header, int dataBytes, ulong? declaredLength = null)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredLength ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        return bytes;
    }

    private static SafetensorsFormatException Refuse(byte[] bytes, SafetensorsReadOptions? options = null)
    {
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Parse(bytes, Source, options));
        Assert.StartsWith(Source + ": ", e.Message, StringComparison.Ordinal);
        return e;
    }

    private static void AssertRefused(string header, int dataBytes, string? tensor, string problem)
    {
        var e = Refuse(Build(header, dataBytes));
        Assert.Equal(tensor, e.TensorName);
        if (tensor is not null) Assert.Contains($"tensor '{tensor}'", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_ValidHandBuiltFile_Accepted()
    {
        var bytes = Build("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}}""", 12);
        BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(bytes.Length - 12), 1.5f);
        var file = SafetensorsFile.Parse(bytes, Source);
        Assert.Equal([1.5f, 0f], file.ReadFloats("a"));
        Assert.Equal([0], file.ReadInt32s("b"));
        Assert.Empty(file.Metadata);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    public void Parse_ShorterThanHeaderLength_Refused(int length)
    {
        var e = Refuse(new byte[length]);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_HeaderLengthBeyondFile_Refused()
    {
        var e = Refuse(Build("{}", 0, declaredLength: 1000));
        Assert.Contains("declares a 1000-byte header but only 2 bytes follow", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_HeaderAboveLimit_RefusedBeforeParsing()
    {
        var e = Refuse(Build("{}", 0, declaredLength: 200_000_000));
        Assert.Contains("200000000-byte header, above the limit of 100000000", e.Message, StringComparison.Ordinal);
        var small = new SafetensorsReadOptions { MaxHeaderBytes = 16 };
        Assert.Contains("above the limit of 16", Refuse(Build("{\"__metadata__\":{}}", 0), small).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Parse_FileAboveLimit_Refused()
    {
        var bytes = Build("""{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 16);
        var e = Refuse(bytes, new SafetensorsReadOptions { MaxFileBytes = 40 });
        Assert.Contains($"is {bytes.Length} bytes, above the limit of 40 bytes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_FileAboveLimit_RefusedNamingPath()
    {
        using var directory = new TempDirectory();
        var path = directory.File("big.safetensors");
        var writer = new SafetensorsWriter();
        writer.AddFloats("w", new float[100], 100);
        writer.Save(path);
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Load(path, new SafetensorsReadOptions { MaxFileBytes = 100 }));
        Assert.StartsWith(path + ": is ", e.Message, StringComparison.Ordinal);
        Assert.Contains("above the limit of 100 bytes", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_NonSeekableStreamAboveLimit_Refused()
    {
        var writer = new SafetensorsWriter();
        writer.AddFloats("w", new float[100], 100);
        using var stream = new BufferedStream(new MemoryStream(writer.ToArray()));
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Read(stream, "upload", new SafetensorsReadOptions { MaxFileBytes = 64 }));
        Assert.StartsWith("upload: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_TruncatedFile_RefusedNamingPathAndTensor()
    {
        using var directory = new TempDirectory();
        var path = directory.File("cut.safetensors");
        var writer = new SafetensorsWriter();
        writer.AddFloats("first", new float[4], 4);
        writer.AddFloats("second", new float[4], 4);
        var bytes = writer.ToArray();
        File.WriteAllBytes(path, bytes[..^3]);
        var e = Assert.Throws<SafetensorsFormatException>(() => SafetensorsFile.Load(path));
        Assert.Equal($"{path}: tensor 'second': data_offsets [16, 32] lie outside the 29-byte data section (truncated file?)", e.Message);
    }

    [Theory]
    [InlineData("{\"a\": ", "not valid JSON")]
    [InlineData("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} trailing", "not valid JSON")]
    [InlineData("[1, 2]", "must be a JSON object, but is Array")]
    [InlineData("", "not valid JSON")]
    public void Parse_MalformedJson_Refused(string header, string problem) => AssertRefused(header, 4, null, problem);

    [Fact]
    public void Parse_InvalidUtf8Header_Refused()
    {
        var bytes = Build("{\"a\":1}", 0);
        bytes[10] = 0xFF;
        Assert.Contains("header is not valid UTF-8", Refuse(bytes).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("F99", "unknown dtype 'F99'")]
    [InlineData("f32", "unknown dtype 'f32'")]
    [InlineData("U8", "dtype 'U8' is not supported")]
    public void Parse_UnknownDType_Refused(string dtype, string problem) =>
        AssertRefused($$$"""{"w":{"dtype":"{{{dtype}}}","shape":[4],"data_offsets":[0,4]}}""", 4, "w", problem);

    [Theory]
    [InlineData("""{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}""", 16, "shape (3) of F32 needs 12 bytes, but data_offsets [0, 16] span 16")]
    [InlineData("""{"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,16]}}""", 16, "shape (2,2) of F16 needs 8 bytes")]
    [InlineData("""{"w":{"dtype":"F32","shape":[65536,65536,65536],"data_offsets":[0,16]}}""", 16, "needs more bytes than the data section can hold")]
    [InlineData("""{"w":{"dtype":"F32","shape":[],"data_offsets":[0,0]}}""", 0, "shape () of F32 needs 4 bytes")]
    public void Parse_ShapeOffsetSizeMismatch_Refused(string header, int dataBytes, string problem) =>
        AssertRefused(header, dataBytes, "w", problem);

    [Theory]
    [InlineData("""{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", "shape[0] = -1 is not an integer")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}""", "shape[0] = 1.5 is not an integer")]
    [InlineData("""{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}""", "shape[0] = \"1\" is not an integer")]
    [InlineData("""{"w":{"dtype":"F32","data_offsets":[0,4]}}""", "no array 'shape'")]
    [InlineData("""{"w":{"shape":[1],"data_offsets":[0,4]}}""", "no string 'dtype'")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1]}}""", "no 'data_offsets' array")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}""", "no 'data_offsets' array")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}""", "data_offsets value -4 is not a non-negative integer")]
    [InlineData("""{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}""", "data_offsets [4, 0] end before they begin")]
    [InlineData("""{"w":[1,2]}""", "header entry must be an object")]
    public void Parse_MalformedEntry_Refused(string header, string problem) => AssertRefused(header, 4, "w", problem);

    [Fact]
    public void Parse_OffsetsOutOfRange_Refused() =>
        AssertRefused("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 8, "w",
            "data_offsets [4, 12] lie outside the 8-byte data section");

    [Fact]
    public void Parse_OverlappingOffsets_Refused() =>
        AssertRefused("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "b",
            "data_offsets [4, 12] overlap tensor 'a' [0, 8]");

    [Fact]
    public void Parse_SameOffsetsTwice_Refused() =>
        AssertRefused("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}""", 8, "b",
            "overlap tensor 'a'");

    [Fact]
    public void Parse_HoleBetweenTensors_Refused() =>
        AssertRefused("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "b",
            "leave bytes [4, 8) of the data section to no tensor");

    [Fact]
    public void Parse_HoleAtStart_Refused() =>
        AssertRefused("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "a", "leave bytes [0, 4)");

    [Fact]
    public void Parse_TrailingUncoveredBytes_Refused() =>
        AssertRefused("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 9, null,
            "the data section is 9 bytes but the tensors cover only [0, 4): 5 trailing bytes belong to no tensor");

    [Fact]
    public void Parse_DuplicateName_Refused() =>
        AssertRefused("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "a",
            "appears twice");

    [Theory]
    [InlineData("""{"__metadata__":{"k":1}}""", "'__metadata__' entry 'k' must be a string, but is Number")]
    [InlineData("""{"__metadata__":["k"]}""", "'__metadata__' must be an object of strings")]
    [InlineData("""{"__metadata__":{"k":"1","k":"2"}}""", "'__metadata__' entry 'k' appears twice")]
    [InlineData("""{"__metadata__":{},"__metadata__":{}}""", "appears twice")]
    public void Parse_MalformedMetadata_Refused(string header, string problem)
    {
        var e = Refuse(Build(header, 0));
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReadInt32s_I64OutOfRange_Refused()
    {
        var bytes = Build("""{"t":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}""", 16);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(bytes.Length - 8), 1L << 40);
        var file = SafetensorsFile.Parse(bytes, Source);
        var e = Assert.Throws<SafetensorsFormatException>(() => file.ReadInt32s("t"));
        Assert.Equal($"{Source}: tensor 't': element 1 = 1099511627776 does not fit in a 32-bit integer", e.Message);
    }

    [Fact]
    public void Read_WrongKindOrMissingTensor_Refused()
    {
        var bytes = Build("""{"t":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"f":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8);
        var file = SafetensorsFile.Parse(bytes, Source);
        Assert.Contains("has dtype I32, expected a float dtype", Assert.Throws<SafetensorsFormatException>(() => file.ReadFloats("t")).Message,
            StringComparison.Ordinal);
        Assert.Contains("has dtype F32, expected an integer dtype", Assert.Throws<SafetensorsFormatException>(() => file.ReadInt32s("f")).Message,
            StringComparison.Ordinal);
        Assert.Equal($"{Source}: tensor 'nope': is not in the file", Assert.Throws<SafetensorsFormatException>(() => file.GetInfo("nope")).Message);
        Assert.False(file.Contains("nope"));
    }
}
