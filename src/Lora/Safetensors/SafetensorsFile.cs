using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;

namespace FedLora.Lora.Safetensors;

/// <summary>
/// A parsed, validated safetensors file held in memory: an 8-byte little-endian header length N, an
/// N-byte JSON header <c>{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string:
/// string}}</c>, then the raw little-endian data, which the tensors must cover exactly (no overlap,
/// no hole, nothing after the last tensor).
/// </summary>
/// <remarks>
/// Every number in the header is checked before it is used (the header length against the file and
/// the limit, each range against the data section and against its dtype and shape, the ranges
/// against each other), so a hostile file fails with a <see cref="SafetensorsFormatException"/>
/// naming the source, the tensor and the problem, never with a read out of bounds.
/// </remarks>
public sealed class SafetensorsFile
{
    internal const string MetadataKey = "__metadata__";

    private readonly ReadOnlyMemory<byte> _data;
    private readonly Dictionary<string, SafetensorsTensorInfo> _byName;

    private SafetensorsFile(string source, ReadOnlyMemory<byte> data, List<SafetensorsTensorInfo> tensors,
        Dictionary<string, string> metadata)
    {
        Source = source;
        _data = data;
        Tensors = tensors;
        Metadata = metadata;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>The file path or payload label used in error messages.</summary>
    public string Source { get; }

    /// <summary>The tensors in header order.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> map (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Reads and validates the safetensors file at <paramref name="path"/>.</summary>
    /// <exception cref="SafetensorsFormatException">The file is malformed or above a limit.</exception>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    public static SafetensorsFile Load(string path, SafetensorsReadOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= SafetensorsReadOptions.Default;
        var length = new FileInfo(path).Length;
        if (length > options.MaxFileBytes)
        {
            throw new SafetensorsFormatException(path, null, $"is {length} bytes, above the limit of {options.MaxFileBytes} bytes");
        }
        return Parse(File.ReadAllBytes(path), path, options);
    }

    /// <summary>
    /// Reads a safetensors payload from the current position of <paramref name="stream"/> to its end
    /// and validates it. <paramref name="source"/> names the payload in error messages.
    /// </summary>
    /// <exception cref="SafetensorsFormatException">The payload is malformed or above a limit.</exception>
    public static SafetensorsFile Read(Stream stream, string source, SafetensorsReadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        options ??= SafetensorsReadOptions.Default;
        var limit = Math.Min(options.MaxFileBytes, Array.MaxLength);
        byte[] bytes;
        if (stream.CanSeek)
        {
            var remaining = stream.Length - stream.Position;
            if (remaining > limit)
            {
                throw new SafetensorsFormatException(source, null, $"is {remaining} bytes, above the limit of {limit} bytes");
            }
            bytes = new byte[remaining];
            stream.ReadExactly(bytes);
        }
        else
        {
            using var copy = new MemoryStream();
            var chunk = new byte[81920];
            int read;
            while ((read = stream.Read(chunk)) > 0)
            {
                if (copy.Length + read > limit)
                {
                    throw new SafetensorsFormatException(source, null, $"is more than the limit of {limit} bytes");
                }
                copy.Write(chunk, 0, read);
            }
            bytes = copy.ToArray();
        }
        return Parse(bytes, source, options);
    }

    /// <summary>
    /// Validates a safetensors payload held in memory. The returned file keeps a reference to
    /// <paramref name="bytes"/>, which must not change afterwards.
    /// </summary>
    /// <exception cref="SafetensorsFormatException">The payload is malformed or above a limit.</exception>
    public static SafetensorsFile Parse(ReadOnlyMemory<byte> bytes, string source = "<payload>", SafetensorsReadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        options ??= SafetensorsReadOptions.Default;
        var span = bytes.Span;
        if (span.Length > options.MaxFileBytes)
        {
            throw new SafetensorsFormatException(source, null, $"is {span.Length} bytes, above the limit of {options.MaxFileBytes} bytes");
        }
        if (span.Length < sizeof(ulong))
        {
            throw new SafetensorsFormatException(source, null, $"is truncated: {span.Length} bytes, fewer than the 8-byte header length");
        }
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(span);
        if (headerLength > (ulong)options.MaxHeaderBytes)
        {
            throw new SafetensorsFormatException(source, null,
                $"declares a {headerLength}-byte header, above the limit of {options.MaxHeaderBytes} bytes (corrupt or not a safetensors file)");
        }
        var available = span.Length - sizeof(ulong);
        if (headerLength > (ulong)available)
        {
            throw new SafetensorsFormatException(source, null,
                $"is truncated: it declares a {headerLength}-byte header but only {available} bytes follow the header length");
        }
        var dataStart = sizeof(ulong) + (int)headerLength;
        var dataLength = span.Length - dataStart;
        var (tensors, metadata) = ParseHeader(source, span[sizeof(ulong)..dataStart], dataLength);
        CheckCoverage(source, tensors, dataLength);
        return new SafetensorsFile(source, bytes[dataStart..], tensors, metadata);
    }

    /// <summary>True when the file has a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The header entry of tensor <paramref name="name"/>.</summary>
    /// <exception cref="SafetensorsFormatException">There is no such tensor.</exception>
    public SafetensorsTensorInfo GetInfo(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _byName.TryGetValue(name, out var info)
            ? info
            : throw new SafetensorsFormatException(Source, name, "is not in the file");
    }

    /// <summary>The header entry of tensor <paramref name="name"/>, checked to have exactly <paramref name="shape"/>.</summary>
    /// <exception cref="SafetensorsFormatException">There is no such tensor, or its shape differs.</exception>
    public SafetensorsTensorInfo RequireShape(string name, params ReadOnlySpan<int> shape)
    {
        var info = GetInfo(name);
        if (!info.HasShape(shape))
        {
            throw new SafetensorsFormatException(Source, name,
                $"has shape {info.ShapeText}, expected {SafetensorsTensorInfo.FormatShape(shape)}");
        }
        return info;
    }

    /// <summary>Tensor <paramref name="name"/> (any float dtype) converted to a new float32 array.</summary>
    /// <exception cref="SafetensorsFormatException">There is no such tensor, or it is not a float tensor.</exception>
    public float[] ReadFloats(string name)
    {
        var result = new float[GetInfo(name).ElementCount];
        ReadFloats(name, result);
        return result;
    }

    /// <summary>
    /// Copies tensor <paramref name="name"/> into <paramref name="destination"/>, converting F16, BF16
    /// and F64 to float32. destination is (ElementCount).
    /// </summary>
    /// <exception cref="SafetensorsFormatException">There is no such tensor, or it is not a float tensor.</exception>
    public void ReadFloats(string name, Span<float> destination)
    {
        var info = GetInfo(name);
        if (!info.DType.IsFloat())
        {
            throw new SafetensorsFormatException(Source, name, $"has dtype {info.DType}, expected a float dtype (F32, F16, BF16, F64)");
        }
        CheckDestination(info, destination.Length);
        var bytes = Bytes(info);
        switch (info.DType)
        {
            case SafetensorsDType.F32 when BitConverter.IsLittleEndian:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case SafetensorsDType.F32:
                for (var i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * i)..]);
                break;
            case SafetensorsDType.F16:
                for (var i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(2 * i)..]);
                break;
            case SafetensorsDType.BF16:
                for (var i = 0; i < destination.Length; i++)
                {
                    destination[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]) << 16);
                }
                break;
            default:
                for (var i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(bytes[(8 * i)..]);
                break;
        }
    }

    /// <summary>Tensor <paramref name="name"/> (I32, or I64 within int range) as a new int array.</summary>
    /// <exception cref="SafetensorsFormatException">There is no such tensor, it is not an integer tensor, or a value is out of range.</exception>
    public int[] ReadInt32s(string name)
    {
        var result = new int[GetInfo(name).ElementCount];
        ReadInt32s(name, result);
        return result;
    }

    /// <summary>
    /// Copies tensor <paramref name="name"/> into <paramref name="destination"/>, narrowing I64 with a
    /// range check. destination is (ElementCount).
    /// </summary>
    /// <exception cref="SafetensorsFormatException">There is no such tensor, it is not an integer tensor, or a value is out of range.</exception>
    public void ReadInt32s(string name, Span<int> destination)
    {
        var info = GetInfo(name);
        if (info.DType is not (SafetensorsDType.I32 or SafetensorsDType.I64))
        {
            throw new SafetensorsFormatException(Source, name, $"has dtype {info.DType}, expected an integer dtype (I32, I64)");
        }
        CheckDestination(info, destination.Length);
        var bytes = Bytes(info);
        if (info.DType == SafetensorsDType.I32)
        {
            for (var i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes[(4 * i)..]);
            return;
        }
        for (var i = 0; i < destination.Length; i++)
        {
            var value = BinaryPrimitives.ReadInt64LittleEndian(bytes[(8 * i)..]);
            if (value is < int.MinValue or > int.MaxValue)
            {
                throw new SafetensorsFormatException(Source, name, $"element {i} = {value} does not fit in a 32-bit integer");
            }
            destination[i] = (int)value;
        }
    }

    private ReadOnlySpan<byte> Bytes(SafetensorsTensorInfo info) =>
        _data.Span[(int)info.DataBegin..(int)info.DataEnd];

    private static void CheckDestination(SafetensorsTensorInfo info, int destination)
    {
        if (destination != info.ElementCount)
        {
            throw new ArgumentException(
                $"destination has length {destination}, but tensor '{info.Name}' {info.ShapeText} has {info.ElementCount} elements", nameof(destination));
        }
    }

    private static (List<SafetensorsTensorInfo>, Dictionary<string, string>) ParseHeader(string source, ReadOnlySpan<byte> header, long dataLength)
    {
        if (!Utf8.IsValid(header))
        {
            throw new SafetensorsFormatException(source, null, "header is not valid UTF-8 (corrupt or not a safetensors file)");
        }
        JsonDocument document;
        try
        {
            // The header may be padded with trailing spaces to align the data; JSON ignores them.
            document = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsFormatException(source, null, $"header is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsFormatException(source, null, $"header must be a JSON object, but is {root.ValueKind}");
            }
            var tensors = new List<SafetensorsTensorInfo>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                {
                    throw new SafetensorsFormatException(source, property.Name, "appears twice in the header (duplicate names are not allowed)");
                }
                if (property.Name == MetadataKey)
                {
                    ParseMetadata(source, property.Value, metadata);
                }
                else
                {
                    tensors.Add(ParseEntry(source, property.Name, property.Value, dataLength));
                }
            }
            return (tensors, metadata);
        }
    }

    private static void ParseMetadata(string source, JsonElement element, Dictionary<string, string> metadata)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsFormatException(source, null, $"'{MetadataKey}' must be an object of strings, but is {element.ValueKind}");
        }
        foreach (var entry in element.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafetensorsFormatException(source, null,
                    $"'{MetadataKey}' entry '{entry.Name}' must be a string, but is {entry.Value.ValueKind}");
            }
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
            {
                throw new SafetensorsFormatException(source, null, $"'{MetadataKey}' entry '{entry.Name}' appears twice");
            }
        }
    }

    private static SafetensorsTensorInfo ParseEntry(string source, string name, JsonElement entry, long dataLength)
    {
        SafetensorsFormatException Fail(string problem) => new(source, name, problem);

        if (entry.ValueKind != JsonValueKind.Object)
        {
            throw Fail($"header entry must be an object with dtype, shape and data_offsets, but is {entry.ValueKind}");
        }
        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw Fail("header entry has no string 'dtype'");
        }
        if (!SafetensorsDTypes.TryParse(dtypeElement.GetString()!, out var dtype, out var dtypeProblem))
        {
            throw Fail(dtypeProblem);
        }
        if (!entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw Fail("header entry has no array 'shape'");
        }
        var shape = new int[shapeElement.GetArrayLength()];
        var index = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt32(out var value) || value < 0)
            {
                throw Fail($"shape[{index}] = {dim.GetRawText()} is not an integer in [0, {int.MaxValue}]");
            }
            shape[index++] = value;
        }
        if (!entry.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw Fail("header entry has no 'data_offsets' array [begin, end]");
        }
        var begin = Offset(offsetsElement[0]);
        var end = Offset(offsetsElement[1]);
        if (begin > end)
        {
            throw Fail($"data_offsets [{begin}, {end}] end before they begin");
        }
        if (end > (ulong)dataLength)
        {
            throw Fail($"data_offsets [{begin}, {end}] lie outside the {dataLength}-byte data section (truncated file?)");
        }

        // Saturate the element count at 2^32 (more than any data section here can hold), so that
        // count * dim stays below 2^63.
        const long saturated = 1L << 32;
        long count = 1;
        foreach (var dim in shape) count = Math.Min(count * dim, saturated);
        var expectedBytes = count * dtype.Size();
        if (end - begin != (ulong)expectedBytes)
        {
            var needs = count == saturated ? "more bytes than the data section can hold" : $"{expectedBytes} bytes";
            throw Fail($"shape {SafetensorsTensorInfo.FormatShape(shape)} of {dtype} needs {needs}, but data_offsets [{begin}, {end}] span {end - begin}");
        }
        return new SafetensorsTensorInfo(name, dtype, shape, count, (long)begin, (long)end);

        ulong Offset(JsonElement element) =>
            element.ValueKind == JsonValueKind.Number && element.TryGetUInt64(out var value)
                ? value
                : throw Fail($"data_offsets value {element.GetRawText()} is not a non-negative integer");
    }

    /// <summary>The tensors must tile the data section exactly: sorted by offset, each begins where the previous ends.</summary>
    private static void CheckCoverage(string source, List<SafetensorsTensorInfo> tensors, long dataLength)
    {
        var sorted = tensors.OrderBy(t => t.DataBegin).ThenBy(t => t.DataEnd).ToList();
        long expected = 0;
        SafetensorsTensorInfo? previous = null;
        foreach (var tensor in sorted)
        {
            if (tensor.DataBegin < expected)
            {
                throw new SafetensorsFormatException(source, tensor.Name,
                    $"data_offsets [{tensor.DataBegin}, {tensor.DataEnd}] overlap tensor '{previous!.Name}' [{previous.DataBegin}, {previous.DataEnd}]");
            }
            if (tensor.DataBegin > expected)
            {
                throw new SafetensorsFormatException(source, tensor.Name,
                    $"data_offsets [{tensor.DataBegin}, {tensor.DataEnd}] leave bytes [{expected}, {tensor.DataBegin}) of the data section to no tensor (holes are not allowed)");
            }
            expected = tensor.DataEnd;
            previous = tensor;
        }
        if (expected != dataLength)
        {
            throw new SafetensorsFormatException(source, null,
                $"the data section is {dataLength} bytes but the tensors cover only [0, {expected}): {dataLength - expected} trailing bytes belong to no tensor");
        }
    }
}
