using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>How a client's alpha_k follows from the global settings when its rank r_k differs from r.</summary>
public enum ClientScaleRule
{
    /// <summary>
    /// alpha_k is chosen so that s_k = s (alpha_k = alpha r_k / r, or alpha sqrt(r_k / r) under rsLoRA):
    /// a truncated adapter then acts exactly as the global adapter's first ranks, and every client's
    /// factors are in the same units. With alpha = 2r this is FLoRA's alpha_k = 2 r_k.
    /// </summary>
    SameScale,

    /// <summary>alpha_k = alpha for every client (peft's habit), so s_k = alpha / r_k differs by client.</summary>
    SameAlpha,
}

/// <summary>
/// The global LoRA settings of a run: the global rank r (r_max for heterogeneous methods, the cap
/// on any client's rank), alpha, and how the scale follows from them, chosen once and used
/// identically by clients and server.
/// </summary>
/// <param name="Rank">r, in [1, min(C, O)] of every adapted module.</param>
/// <param name="Alpha">alpha of the global adapter.</param>
/// <param name="Scaling">s = alpha / r or alpha / sqrt(r).</param>
/// <param name="ClientScale">How alpha_k is set for a client of rank r_k (FSLoRA ignores it: its sketch scale is s r / m_k).</param>
public sealed record LoraSettings(int Rank, float Alpha, LoraScaling Scaling = LoraScaling.Standard, ClientScaleRule ClientScale = ClientScaleRule.SameScale)
{
    /// <summary>s of the global adapter.</summary>
    public float Scale => LoraScale.Of(Alpha, Rank, Scaling);

    /// <summary>alpha_k of a client adapter of rank <paramref name="rank"/>; exactly <see cref="Alpha"/> when the ranks agree.</summary>
    public float AlphaFor(int rank) => ClientScale switch
    {
        ClientScaleRule.SameAlpha => Alpha,
        ClientScaleRule.SameScale => Scaling == LoraScaling.Standard
            ? (float)((double)Alpha * rank / Rank)
            : (float)(Alpha * Math.Sqrt((double)rank / Rank)),
        _ => throw new InvalidOperationException($"unknown client scale rule {ClientScale}"),
    };

    /// <summary>s_k = LoraScale.Of(alpha_k, r_k): the scale a client of rank <paramref name="rank"/> trains with and the server weights it by.</summary>
    public float ScaleFor(int rank) => LoraScale.Of(AlphaFor(rank), rank, Scaling);
}
