using FedLora.Lora.Safetensors;

namespace FedLora.Model.Tests.Safetensors;

public class SafetensorsRoundTripTests
{
    private static SafetensorsWriter SampleWriter()
    {
        var writer = new SafetensorsWriter();
        writer.Metadata["format"] = "test";
        writer.Metadata["note"] = "unicode é ✓ and \"quotes\"";
        var weights = new float[7 * 3];
        for (var i = 0; i < weights.Length; i++) weights[i] = MathF.Sin(i) * 1e3f;
        weights[0] = float.NaN;
        weights[1] = -0f;
        weights[2] = float.Epsilon;
        weights[3] = float.NegativeInfinity;
        writer.AddFloats("layer.weight", weights, 7, 3);
        writer.AddFloats("layer.bias", [1f, 2f, 3f], 3);
        writer.AddInt32s("batch.tokens", [0, 256, -1, int.MaxValue, int.MinValue, 5], 2, 3);
        writer.AddFloats("scalar", [4.25f]);
        writer.AddFloats("empty", [], 0, 5);
        return writer;
    }

    private static void AssertSample(SafetensorsFile file)
    {
        Assert.Equal(["layer.weight", "layer.bias", "batch.tokens", "scalar", "empty"], file.Tensors.Select(t => t.Name));
        Assert.Equal("test", file.Metadata["format"]);
        Assert.Equal("unicode é ✓ and \"quotes\"", file.Metadata["note"]);

        var weights = file.ReadFloats("layer.weight");
        Assert.Equal([7, 3], file.GetInfo("layer.weight").Shape);
        Assert.Equal(SafetensorsDType.F32, file.GetInfo("layer.weight").DType);
        Assert.True(float.IsNaN(weights[0]));
        Assert.Equal(BitConverter.SingleToInt32Bits(-0f), BitConverter.SingleToInt32Bits(weights[1]));
        Assert.Equal(float.Epsilon, weights[2]);
        Assert.Equal(float.NegativeInfinity, weights[3]);
        for (var i = 4; i < weights.Length; i++) Assert.Equal(MathF.Sin(i) * 1e3f, weights[i]);

        Assert.Equal([1f, 2f, 3f], file.ReadFloats("layer.bias"));
        Assert.Equal([0, 256, -1, int.MaxValue, int.MinValue, 5], file.ReadInt32s("batch.tokens"));
        Assert.Equal(SafetensorsDType.I32, file.GetInfo("batch.tokens").DType);
        Assert.Empty(file.GetInfo("scalar").Shape);
        Assert.Equal(1, file.GetInfo("scalar").ElementCount);
        Assert.Equal([4.25f], file.ReadFloats("scalar"));
        Assert.Equal(0, file.GetInfo("empty").ElementCount);
        Assert.Empty(file.ReadFloats("empty"));
    }

    [Fact]
    public void Write_ThenParse_KeepsValuesShapesAndMetadata()
    {
        AssertSample(SafetensorsFile.Parse(SampleWriter().ToArray()));
    }

    [Fact]
    public void Write_Header_IsPaddedToEightBytes()
    {
        var bytes = SampleWriter().ToArray();
        var headerLength = BitConverter.ToUInt64(bytes, 0);
        Assert.Equal(0UL, headerLength % 8);
        Assert.Equal((byte)'{', bytes[8]);
    }

    [Fact]
    public void Save_ThenLoad_KeepsValuesAndLeavesNoTemporaryFile()
    {
        using var directory = new TempDirectory();
        var path = directory.File("model.safetensors");
        File.WriteAllText(path, "an older file that Save must replace");

        SampleWriter().Save(path);

        AssertSample(SafetensorsFile.Load(path));
        Assert.Equal(["model.safetensors"], Directory.GetFiles(directory.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void Save_MissingDirectory_ThrowsAndCreatesNothing()
    {
        using var directory = new TempDirectory();
        var path = Path.Combine(directory.Path, "missing", "model.safetensors");
        Assert.Throws<DirectoryNotFoundException>(() => SampleWriter().Save(path));
        Assert.Empty(Directory.GetFileSystemEntries(directory.Path));
    }

    [Fact]
    public void Read_NonSeekableStream_KeepsValues()
    {
        using var stream = new NonSeekableStream(SampleWriter().ToArray());
        AssertSample(SafetensorsFile.Read(stream, "upload"));
    }

    [Fact]
    public void WriteTo_Stream_EqualsToArray()
    {
        using var stream = new MemoryStream();
        SampleWriter().WriteTo(stream);
        Assert.Equal(SampleWriter().ToArray(), stream.ToArray());
    }

    [Fact]
    public void ReadFloats_IntoSpan_FillsDestination()
    {
        var file = SafetensorsFile.Parse(SampleWriter().ToArray());
        var destination = new float[3];
        file.ReadFloats("layer.bias", destination);
        Assert.Equal([1f, 2f, 3f], destination);
        Assert.Throws<ArgumentException>(() => file.ReadFloats("layer.bias", new float[4]));
    }

    [Fact]
    public void RequireShape_Mismatch_NamesTensorAndBothShapes()
    {
        var file = SafetensorsFile.Parse(SampleWriter().ToArray(), "adapter.safetensors");
        Assert.Equal(3, file.RequireShape("layer.bias", 3).ElementCount);
        var e = Assert.Throws<SafetensorsFormatException>(() => file.RequireShape("layer.weight", 3, 7));
        Assert.Equal("adapter.safetensors: tensor 'layer.weight': has shape (7,3), expected (3,7)", e.Message);
    }

    [Fact]
    public void AddFloats_ShapeMismatch_Throws()
    {
        var writer = new SafetensorsWriter();
        var e = Assert.Throws<ArgumentException>(() => writer.AddFloats("w", [1f, 2f, 3f], 2, 2));
        Assert.Contains("'w'", e.Message, StringComparison.Ordinal);
        Assert.Contains("(2,2) holds 4 elements, but 3 values", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => writer.AddFloats("w", [1f], -1));
    }

    [Fact]
    public void AddFloats_DuplicateOrReservedName_Throws()
    {
        var writer = new SafetensorsWriter();
        writer.AddFloats("w", [1f], 1);
        Assert.Throws<ArgumentException>(() => writer.AddFloats("w", [1f], 1));
        Assert.Throws<ArgumentException>(() => writer.AddInt32s("__metadata__", [1], 1));
        Assert.Throws<ArgumentException>(() => writer.AddFloats("", [1f], 1));
        Assert.Equal(1, writer.Count);
    }

    private sealed class NonSeekableStream(byte[] bytes) : Stream
    {
        private readonly MemoryStream _inner = new(bytes);

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, Math.Min(count, 7));
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }
}
