using System.Runtime.Intrinsics;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// Which vector width the Cpu kernels use. It follows the hardware (Vector512 where accelerated,
/// else Vector256, Vector128, scalar); <c>FEDLORA_SIMD=512|256|128|scalar</c> caps it, so that tests
/// can exercise every fallback path on one machine (as can <c>DOTNET_EnableAVX512F=0</c>).
/// </summary>
internal static class SimdWidth
{
    /// <summary>Width in bits: 512, 256, 128, or 0 for scalar code.</summary>
    public static int Bits { get; } = Select(Environment.GetEnvironmentVariable("FEDLORA_SIMD"));

    public static bool Use512 => Bits >= 512;
    public static bool Use256 => Bits >= 256;
    public static bool Use128 => Bits >= 128;

    public static string Describe() => Bits == 0 ? "scalar" : $"Vector{Bits}";

    internal static int Select(string? cap)
    {
        var hardware = Vector512.IsHardwareAccelerated ? 512
            : Vector256.IsHardwareAccelerated ? 256
            : Vector128.IsHardwareAccelerated ? 128
            : 0;
        var limit = cap?.Trim().ToUpperInvariant() switch
        {
            null or "" => 512,
            "512" => 512,
            "256" => 256,
            "128" => 128,
            "SCALAR" or "0" => 0,
            _ => throw new InvalidOperationException(
                $"FEDLORA_SIMD='{cap}' is not one of 512, 256, 128, scalar; unset it to use the widest vectors this CPU has"),
        };
        return Math.Min(hardware, limit);
    }
}
