using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// One module's LoRA factors on the host, for a linear layer W (O,C): A is (r,C) and B is (O,r),
/// both row-major, and the layer computes W + s B A. Strategies treat every adapter they are given
/// as read-only and return new ones.
/// </summary>
public sealed class HostAdapter
{
    /// <summary>Wraps <paramref name="a"/> (r,C) and <paramref name="b"/> (O,r) without copying.</summary>
    public HostAdapter(LoraModuleSpec module, int rank, float[] a, float[] b)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (rank < 0) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the rank of module {module.Name} must be >= 0");
        if (a.Length != (long)rank * module.InFeatures)
        {
            throw new ArgumentException($"A of module {module.Name} must be (r,C) = ({rank},{module.InFeatures}) = {(long)rank * module.InFeatures} floats, got {a.Length}", nameof(a));
        }
        if (b.Length != (long)module.OutFeatures * rank)
        {
            throw new ArgumentException($"B of module {module.Name} must be (O,r) = ({module.OutFeatures},{rank}) = {(long)module.OutFeatures * rank} floats, got {b.Length}", nameof(b));
        }
        Module = module;
        Rank = rank;
        A = a;
        B = b;
    }

    /// <summary>The layer this adapter belongs to (name, C, O).</summary>
    public LoraModuleSpec Module { get; }

    /// <summary>r.</summary>
    public int Rank { get; }

    /// <summary>A (r,C), row-major.</summary>
    public float[] A { get; }

    /// <summary>B (O,r), row-major.</summary>
    public float[] B { get; }

    /// <summary>An all-zero adapter of rank <paramref name="rank"/>.</summary>
    public static HostAdapter Zero(LoraModuleSpec module, int rank)
    {
        ArgumentNullException.ThrowIfNull(module);
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        return new HostAdapter(module, rank, new float[rank * module.InFeatures], new float[module.OutFeatures * rank]);
    }

    /// <summary>
    /// peft's fresh adapter, drawn exactly as <see cref="LoraAdapter.Initialize"/> draws it: A row-major
    /// from U(-1/sqrt(C), 1/sqrt(C)) (kaiming-uniform with a = sqrt(5)), B zero.
    /// </summary>
    public static HostAdapter Fresh(LoraModuleSpec module, int rank, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var adapter = Zero(module, rank);
        FillKaimingUniform(adapter.A, module.InFeatures, random);
        return adapter;
    }

    /// <summary>
    /// Fresh adapters for every module, in order, from one generator: the same values
    /// <see cref="AdapterSet.Initialize"/> writes for these modules, rank and generator.
    /// </summary>
    public static IReadOnlyList<HostAdapter> Fresh(IReadOnlyList<LoraModuleSpec> modules, int rank, Random random)
    {
        ArgumentNullException.ThrowIfNull(modules);
        var adapters = new HostAdapter[modules.Count];
        for (var m = 0; m < modules.Count; m++) adapters[m] = Fresh(modules[m], rank, random);
        return adapters;
    }

    /// <summary>A deep copy.</summary>
    public HostAdapter Clone() => new(Module, Rank, (float[])A.Clone(), (float[])B.Clone());

    internal static void FillKaimingUniform(Span<float> rows, int inFeatures, Random random)
    {
        var bound = inFeatures == 0 ? 0 : 1.0 / Math.Sqrt(inFeatures);
        for (var i = 0; i < rows.Length; i++) rows[i] = (float)((random.NextDouble() * 2 - 1) * bound);
    }
}
