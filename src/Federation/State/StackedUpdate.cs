using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// A low-rank change to a base weight W (O,C) in stacked form: W += B diag(RowWeights) A, with B
/// (O,R), A (R,C) and RowWeights (R), R the total rank. This is exactly what
/// <see cref="FedLora.Kernels.Backend.StackedAggregation"/> applies; FLoRA's merged round update is
/// one per module, with client k's block of R weighted by p_k s_k.
/// </summary>
public sealed class StackedUpdate
{
    /// <summary>Wraps the factors without copying.</summary>
    public StackedUpdate(LoraModuleSpec module, int rank, float[] b, float[] a, float[] rowWeights)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(b);
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(rowWeights);
        if (rank < 0) throw new ArgumentOutOfRangeException(nameof(rank), rank, "the stacked rank must be >= 0");
        if (b.Length != (long)module.OutFeatures * rank) throw new ArgumentException($"stacked B of module {module.Name} must be (O,R) = ({module.OutFeatures},{rank}), got {b.Length} floats", nameof(b));
        if (a.Length != (long)rank * module.InFeatures) throw new ArgumentException($"stacked A of module {module.Name} must be (R,C) = ({rank},{module.InFeatures}), got {a.Length} floats", nameof(a));
        if (rowWeights.Length != rank) throw new ArgumentException($"row weights of module {module.Name} must be (R) = ({rank}), got {rowWeights.Length}", nameof(rowWeights));
        Module = module;
        Rank = rank;
        B = b;
        A = a;
        RowWeights = rowWeights;
    }

    /// <summary>The layer the update applies to.</summary>
    public LoraModuleSpec Module { get; }

    /// <summary>R, the stacked rank.</summary>
    public int Rank { get; }

    /// <summary>B_stack (O,R) = [B_1 ... B_K], row-major.</summary>
    public float[] B { get; }

    /// <summary>A_stack (R,C) = [A_1; ...; A_K], row-major.</summary>
    public float[] A { get; }

    /// <summary>The weight of each of the R rank-one terms.</summary>
    public float[] RowWeights { get; }

    /// <summary>The tensors that carry this update over the wire.</summary>
    public IEnumerable<WireTensor> ToWire()
    {
        yield return WireTensor.OfFloats($"{Module.Name}.stacked_B", B, Module.OutFeatures, Rank);
        yield return WireTensor.OfFloats($"{Module.Name}.stacked_A", A, Rank, Module.InFeatures);
        yield return WireTensor.OfFloats($"{Module.Name}.stacked_weights", RowWeights, Rank);
    }
}
