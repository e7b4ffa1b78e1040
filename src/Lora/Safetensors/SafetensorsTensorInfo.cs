namespace FedLora.Lora.Safetensors;

/// <summary>One tensor's header entry: name, element type, shape and byte range in the data section.</summary>
public sealed class SafetensorsTensorInfo
{
    internal SafetensorsTensorInfo(string name, SafetensorsDType dtype, int[] shape, long elementCount, long dataBegin, long dataEnd)
    {
        Name = name;
        DType = dtype;
        _shape = shape;
        ElementCount = elementCount;
        DataBegin = dataBegin;
        DataEnd = dataEnd;
    }

    private readonly int[] _shape;

    /// <summary>The tensor's name, e.g. <c>transformer.h.0.attn.c_attn.weight</c>.</summary>
    public string Name { get; }

    /// <summary>The element type stored in the file.</summary>
    public SafetensorsDType DType { get; }

    /// <summary>The shape, outermost dimension first (row-major); empty for a scalar.</summary>
    public IReadOnlyList<int> Shape => _shape;

    /// <summary>The number of elements, the product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount { get; }

    /// <summary>First byte of the tensor, relative to the start of the data section.</summary>
    public long DataBegin { get; }

    /// <summary>One past the last byte of the tensor, relative to the start of the data section.</summary>
    public long DataEnd { get; }

    /// <summary>True when the shape equals <paramref name="shape"/> exactly.</summary>
    public bool HasShape(params ReadOnlySpan<int> shape) => shape.SequenceEqual(_shape);

    /// <summary>The shape as text, e.g. <c>(72,24)</c>.</summary>
    public string ShapeText => FormatShape(_shape);

    internal static string FormatShape(ReadOnlySpan<int> shape) => $"({string.Join(',', shape.ToArray())})";

    /// <inheritdoc/>
    public override string ToString() => $"{Name} {DType} {ShapeText}";
}
