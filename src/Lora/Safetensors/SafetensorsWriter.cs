using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace FedLora.Lora.Safetensors;

/// <summary>
/// Builds a safetensors file: add tensors (their values are copied at once) and metadata, then
/// write to a stream, a byte array, or atomically to a file.
/// </summary>
/// <remarks>
/// Tensors are laid out in the order they were added; the header is padded with spaces to a
/// multiple of 8 bytes, as the reference writer does, so every tensor starts 8-byte aligned.
/// </remarks>
public sealed class SafetensorsWriter
{
    private readonly List<(string Name, SafetensorsDType DType, int[] Shape, byte[] Data)> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    /// <summary>The <c>__metadata__</c> map written to the header (keys in ordinal order).</summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The number of tensors added so far.</summary>
    public int Count => _tensors.Count;

    /// <summary>Adds a float32 tensor. values is (product of shape); shape is outermost first, empty for a scalar.</summary>
    /// <exception cref="ArgumentException">The name is empty, reserved or taken, or the shape does not match the values.</exception>
    public void AddFloats(string name, ReadOnlySpan<float> values, params ReadOnlySpan<int> shape)
    {
        var data = CheckTensor(name, SafetensorsDType.F32, values.Length, shape);
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.AsBytes(values).CopyTo(data);
        }
        else
        {
            for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4 * i), values[i]);
        }
        _tensors.Add((name, SafetensorsDType.F32, shape.ToArray(), data));
    }

    /// <summary>Adds an int32 tensor (token batches). values is (product of shape).</summary>
    /// <exception cref="ArgumentException">The name is empty, reserved or taken, or the shape does not match the values.</exception>
    public void AddInt32s(string name, ReadOnlySpan<int> values, params ReadOnlySpan<int> shape)
    {
        var data = CheckTensor(name, SafetensorsDType.I32, values.Length, shape);
        for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(data.AsSpan(4 * i), values[i]);
        _tensors.Add((name, SafetensorsDType.I32, shape.ToArray(), data));
    }

    /// <summary>Adds a tensor of any dtype from its little-endian bytes (tests build non-F32 files with it).</summary>
    internal void AddRaw(string name, SafetensorsDType dtype, ReadOnlySpan<byte> littleEndianBytes, params ReadOnlySpan<int> shape)
    {
        if (littleEndianBytes.Length % dtype.Size() != 0)
        {
            throw new ArgumentException($"{littleEndianBytes.Length} bytes is not a whole number of {dtype} elements", nameof(littleEndianBytes));
        }
        var data = CheckTensor(name, dtype, littleEndianBytes.Length / dtype.Size(), shape);
        littleEndianBytes.CopyTo(data);
        _tensors.Add((name, dtype, shape.ToArray(), data));
    }

    /// <summary>Writes the file to <paramref name="stream"/> (from its current position).</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var header = BuildHeader();
        Span<byte> length = stackalloc byte[sizeof(ulong)];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
        stream.Write(length);
        stream.Write(header);
        foreach (var tensor in _tensors) stream.Write(tensor.Data);
    }

    /// <summary>The file as a byte array (a network payload).</summary>
    public byte[] ToArray()
    {
        using var stream = new MemoryStream();
        WriteTo(stream);
        return stream.ToArray();
    }

    /// <summary>
    /// Writes the file to <paramref name="path"/> atomically: to a temporary file in the same
    /// directory, flushed to disk, then moved over <paramref name="path"/>. A crash leaves either the
    /// old file or the new one, never a partial file.
    /// </summary>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var fullPath = Path.GetFullPath(path);
        var directory = Path.GetDirectoryName(fullPath)!;
        var temporary = Path.Combine(directory, $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                WriteTo(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temporary, fullPath, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    private byte[] CheckTensor(string name, SafetensorsDType dtype, int valueCount, ReadOnlySpan<int> shape)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name == SafetensorsFile.MetadataKey)
        {
            throw new ArgumentException($"'{SafetensorsFile.MetadataKey}' is reserved for the metadata map", nameof(name));
        }
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0)
            {
                throw new ArgumentException($"tensor '{name}': shape {SafetensorsTensorInfo.FormatShape(shape)} has a negative dimension", nameof(shape));
            }
            count = Math.Min(count * dim, (long)int.MaxValue + 1);
        }
        if (count != valueCount)
        {
            throw new ArgumentException(
                $"tensor '{name}': shape {SafetensorsTensorInfo.FormatShape(shape)} holds {count} elements, but {valueCount} values were given", nameof(shape));
        }
        if (!_names.Add(name))
        {
            throw new ArgumentException($"tensor '{name}' was already added", nameof(name));
        }
        return new byte[checked(valueCount * dtype.Size())];
    }

    /// <summary>
    /// The size in bytes of the file a writer holding <paramref name="tensors"/> (in this order, by name, dtype
    /// and shape) and <paramref name="metadata"/> would write, without their values: what a payload will weigh
    /// before it is built.
    /// </summary>
    public static long FileLength(IReadOnlyDictionary<string, string> metadata, IEnumerable<(string Name, SafetensorsDType DType, int[] Shape)> tensors)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        ArgumentNullException.ThrowIfNull(tensors);
        var layout = tensors.Select(t => (t.Name, t.DType, t.Shape, Bytes: t.Shape.Aggregate(1L, (n, dim) => n * dim) * t.DType.Size())).ToList();
        return sizeof(ulong) + BuildHeader(metadata, layout).Length + layout.Sum(t => t.Bytes);
    }

    private byte[] BuildHeader() => BuildHeader(Metadata.AsReadOnly(), _tensors.Select(t => (t.Name, t.DType, t.Shape, (long)t.Data.Length)));

    private static byte[] BuildHeader(IReadOnlyDictionary<string, string> metadata, IEnumerable<(string Name, SafetensorsDType DType, int[] Shape, long Bytes)> tensors)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            if (metadata.Count > 0)
            {
                json.WriteStartObject(SafetensorsFile.MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, dtype, shape, bytes) in tensors)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype.ToString());
                json.WriteStartArray("shape");
                foreach (var dim in shape) json.WriteNumberValue(dim);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + bytes);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += bytes;
            }
            json.WriteEndObject();
        }
        var padded = (buffer.WrittenCount + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }
}
