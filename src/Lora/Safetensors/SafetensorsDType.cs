namespace FedLora.Lora.Safetensors;

/// <summary>
/// The safetensors element types FedLora reads; the names are the spec's dtype strings. Floating
/// types are converted to float32 on reading, integer types serve token batches.
/// </summary>
public enum SafetensorsDType
{
    /// <summary>IEEE 754 single precision, 4 bytes: FedLora's working type.</summary>
    F32,

    /// <summary>IEEE 754 half precision, 2 bytes (read only, widened to float32).</summary>
    F16,

    /// <summary>bfloat16, the top 16 bits of a float32, 2 bytes (read only, widened to float32).</summary>
    BF16,

    /// <summary>IEEE 754 double precision, 8 bytes (read only, rounded to float32).</summary>
    F64,

    /// <summary>Signed 32-bit integer, 4 bytes.</summary>
    I32,

    /// <summary>Signed 64-bit integer, 8 bytes (read only, narrowed to int32 with a range check).</summary>
    I64,
}

internal static class SafetensorsDTypes
{
    /// <summary>dtypes of the safetensors spec that FedLora recognises but does not read.</summary>
    private static readonly string[] Unsupported = ["BOOL", "U8", "I8", "U16", "I16", "U32", "U64", "F8_E5M2", "F8_E4M3"];

    public static int Size(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        SafetensorsDType.F32 or SafetensorsDType.I32 => 4,
        SafetensorsDType.F64 or SafetensorsDType.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a safetensors dtype"),
    };

    public static bool IsFloat(this SafetensorsDType dtype) =>
        dtype is SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F64;

    /// <summary>Parses a header dtype string (exact, case-sensitive as in the spec), or says why not.</summary>
    public static bool TryParse(string text, out SafetensorsDType dtype, out string problem)
    {
        dtype = default;
        problem = "";
        switch (text)
        {
            case "F32": dtype = SafetensorsDType.F32; return true;
            case "F16": dtype = SafetensorsDType.F16; return true;
            case "BF16": dtype = SafetensorsDType.BF16; return true;
            case "F64": dtype = SafetensorsDType.F64; return true;
            case "I32": dtype = SafetensorsDType.I32; return true;
            case "I64": dtype = SafetensorsDType.I64; return true;
        }
        problem = Array.IndexOf(Unsupported, text) >= 0
            ? $"dtype '{text}' is not supported (FedLora reads F32, F16, BF16, F64, I32, I64)"
            : $"unknown dtype '{text}'";
        return false;
    }
}
