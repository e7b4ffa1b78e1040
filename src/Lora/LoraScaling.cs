namespace FedLora.Lora;

/// <summary>How an adapter's scale s follows from alpha and rank r; chosen once per run, used identically by clients and server.</summary>
public enum LoraScaling
{
    /// <summary>s = alpha / r (peft's default).</summary>
    Standard,

    /// <summary>s = alpha / sqrt(r) (rsLoRA).</summary>
    RankStabilized,
}

/// <summary>The scale of a LoRA adapter.</summary>
public static class LoraScale
{
    /// <summary>s for an adapter of rank <paramref name="rank"/> and the given alpha; 0 for rank 0.</summary>
    public static float Of(float alpha, int rank, LoraScaling scaling)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        if (!float.IsFinite(alpha)) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "LoRA alpha must be finite");
        if (rank == 0) return 0f;
        return scaling switch
        {
            LoraScaling.Standard => alpha / rank,
            LoraScaling.RankStabilized => alpha / MathF.Sqrt(rank),
            _ => throw new ArgumentOutOfRangeException(nameof(scaling), scaling, "unknown LoRA scaling"),
        };
    }
}
