namespace FedLora.Federation;

/// <summary>
/// A tensor as it travels between server and client (a safetensors entry): a name, a shape and
/// float32 or int32 data. Assignments and updates list exactly the tensors they send, so that a
/// communication ledger counts what a serialized payload holds.
/// </summary>
public sealed class WireTensor
{
    private WireTensor(string name, int[] shape, float[]? floats, int[]? integers)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        long count = 1;
        foreach (var dim in shape)
        {
            if (dim < 0) throw new ArgumentException($"tensor {name} has a negative dimension in shape ({string.Join(",", shape)})", nameof(shape));
            count *= dim;
        }
        var length = floats?.Length ?? integers!.Length;
        if (count != length) throw new ArgumentException($"tensor {name} of shape ({string.Join(",", shape)}) needs {count} values, got {length}", nameof(shape));
        Name = name;
        Shape = shape;
        Floats = floats;
        Integers = integers;
    }

    /// <summary>The tensor's name, e.g. "transformer.h.0.attn.c_attn.lora_A.weight".</summary>
    public string Name { get; }

    /// <summary>The dimensions, row-major.</summary>
    public IReadOnlyList<int> Shape { get; }

    /// <summary>The values of an F32 tensor, or null.</summary>
    public float[]? Floats { get; }

    /// <summary>The values of an I32 tensor, or null.</summary>
    public int[]? Integers { get; }

    /// <summary>The safetensors dtype: "F32" or "I32".</summary>
    public string Dtype => Floats is null ? "I32" : "F32";

    /// <summary>Number of values.</summary>
    public int ElementCount => Floats?.Length ?? Integers!.Length;

    /// <summary>Bytes of data (4 per value), headers excluded.</summary>
    public long ByteCount => 4L * ElementCount;

    /// <summary>An F32 tensor over <paramref name="data"/> (not copied).</summary>
    public static WireTensor OfFloats(string name, float[] data, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new WireTensor(name, shape, data, null);
    }

    /// <summary>An I32 tensor over <paramref name="data"/> (not copied).</summary>
    public static WireTensor OfInts(string name, int[] data, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new WireTensor(name, shape, null, data);
    }

    /// <summary>Total data bytes of <paramref name="tensors"/>.</summary>
    public static long TotalBytes(IEnumerable<WireTensor> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        return tensors.Sum(tensor => tensor.ByteCount);
    }

    /// <summary>The wire (and peft) name of module <paramref name="module"/>'s A factor.</summary>
    public static string LoraA(string module) => $"{module}.lora_A.weight";

    /// <summary>The wire (and peft) name of module <paramref name="module"/>'s B factor.</summary>
    public static string LoraB(string module) => $"{module}.lora_B.weight";

    /// <summary>The wire name of module <paramref name="module"/>'s FSLoRA index set.</summary>
    public static string RankIndices(string module) => $"{module}.lora_rank_indices";
}
