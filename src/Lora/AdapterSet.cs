using FedLora.Kernels;

namespace FedLora.Lora;

/// <summary>A linear layer that can carry an adapter: its name (e.g. "transformer.h.0.attn.c_attn") and shape W (O,C).</summary>
/// <param name="Name">The layer's name, as in Hugging Face GPT-2 checkpoints.</param>
/// <param name="InFeatures">C.</param>
/// <param name="OutFeatures">O.</param>
public sealed record LoraModuleSpec(string Name, int InFeatures, int OutFeatures);

/// <summary>
/// The adapters of every adapted layer of a model, all of one rank r, in one trainable buffer (and
/// one gradient buffer of the same layout), with the rank index set each module currently trains:
/// null for plain LoRA, a subset I for an FSLoRA sketch (then the module's scale is s r / |I|).
/// </summary>
public sealed class AdapterSet : IDisposable
{
    private readonly int[]?[] _activeIndices;
    private readonly float[] _activeScales;
    private DeviceBuffer? _gradients;

    /// <summary>Allocates zeroed adapters of rank <paramref name="rank"/> on every module.</summary>
    public AdapterSet(Backend backend, IReadOnlyList<LoraModuleSpec> modules, int rank, float alpha, LoraScaling scaling)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(modules);
        if (rank < 0) throw new ArgumentOutOfRangeException(nameof(rank), rank, "the LoRA rank must be >= 0");
        foreach (var module in modules)
        {
            if (rank > Math.Min(module.InFeatures, module.OutFeatures))
            {
                throw new ArgumentOutOfRangeException(nameof(rank), rank,
                    $"rank {rank} exceeds min(C, O) = {Math.Min(module.InFeatures, module.OutFeatures)} of layer {module.Name} ({module.OutFeatures}x{module.InFeatures})");
            }
        }
        Backend = backend;
        Modules = modules;
        Rank = rank;
        Alpha = alpha;
        Scaling = scaling;
        Scale = LoraScale.Of(alpha, rank, scaling);
        var total = 0;
        foreach (var module in modules) total = checked(total + rank * (module.InFeatures + module.OutFeatures));
        Parameters = backend.Allocate(total);
        var adapters = new LoraAdapter[modules.Count];
        var offset = 0;
        for (var i = 0; i < modules.Count; i++)
        {
            var (c, o) = (modules[i].InFeatures, modules[i].OutFeatures);
            var a = Parameters.View(offset, rank * c);
            var b = Parameters.View(offset + rank * c, o * rank);
            adapters[i] = new LoraAdapter(c, o, rank, Scale, a, b);
            offset += rank * (c + o);
        }
        Adapters = adapters;
        _activeIndices = new int[]?[modules.Count];
        _activeScales = new float[modules.Count];
        Array.Fill(_activeScales, Scale);
    }

    /// <summary>The backend holding the buffers.</summary>
    public Backend Backend { get; }

    /// <summary>The adapted layers, in buffer order.</summary>
    public IReadOnlyList<LoraModuleSpec> Modules { get; }

    /// <summary>One adapter per module, viewing <see cref="Parameters"/>.</summary>
    public IReadOnlyList<LoraAdapter> Adapters { get; }

    /// <summary>r.</summary>
    public int Rank { get; }

    /// <summary>alpha.</summary>
    public float Alpha { get; }

    /// <summary>How the scale follows from alpha and r.</summary>
    public LoraScaling Scaling { get; }

    /// <summary>s, the scale of plain (unsketched) use.</summary>
    public float Scale { get; }

    /// <summary>Every A and B, module after module (A then B).</summary>
    public DeviceBuffer Parameters { get; }

    /// <summary>Gradients in the layout of <see cref="Parameters"/>, allocated on first use.</summary>
    public DeviceBuffer Gradients => _gradients ??= Backend.Allocate(Parameters.Length);

    /// <summary>The gradient view of module <paramref name="module"/>'s A (r,C).</summary>
    public BufferView GradientOfA(int module) => Gradients.View(Adapters[module].A.Offset, Adapters[module].A.Length);

    /// <summary>The gradient view of module <paramref name="module"/>'s B (O,r).</summary>
    public BufferView GradientOfB(int module) => Gradients.View(Adapters[module].B.Offset, Adapters[module].B.Length);

    /// <summary>The rank indices module <paramref name="module"/> trains now (null: all).</summary>
    public int[]? ActiveIndices(int module) => _activeIndices[module];

    /// <summary>The scale module <paramref name="module"/> uses now: s, or s r / |I| under a sketch.</summary>
    public float ActiveScale(int module) => _activeScales[module];

    /// <summary>The largest number of active ranks over modules (the width of the LoRA hidden activations).</summary>
    public int MaxActiveRank
    {
        get
        {
            var max = 0;
            for (var i = 0; i < Modules.Count; i++) max = Math.Max(max, _activeIndices[i]?.Length ?? Rank);
            return max;
        }
    }

    /// <summary>
    /// Restricts module <paramref name="module"/> to the ranks in <paramref name="indices"/> (an FSLoRA
    /// sketch, same set for A's rows and B's columns) with the unbiased scale s r / |I|; null restores
    /// plain use of all ranks at scale s.
    /// </summary>
    public void SetSketch(int module, int[]? indices)
    {
        if (indices is not null)
        {
            if (indices.Length == 0) throw new ArgumentException($"a sketch of module {Modules[module].Name} needs at least one rank index", nameof(indices));
            var seen = new HashSet<int>();
            foreach (var index in indices)
            {
                if ((uint)index >= (uint)Rank) throw new ArgumentOutOfRangeException(nameof(indices), index, $"rank index {index} is outside [0, {Rank}) for module {Modules[module].Name}");
                if (!seen.Add(index)) throw new ArgumentException($"rank index {index} appears twice in the sketch of module {Modules[module].Name}", nameof(indices));
            }
        }
        _activeIndices[module] = indices?.ToArray();
        _activeScales[module] = indices is null ? Scale : Scale * Rank / indices.Length;
    }

    /// <summary>Initialises every adapter as peft does: A kaiming-uniform, B zero.</summary>
    public void Initialize(Random random)
    {
        foreach (var adapter in Adapters) adapter.Initialize(Backend, random);
    }

    /// <summary>Disposes the buffers.</summary>
    public void Dispose()
    {
        Parameters.Dispose();
        _gradients?.Dispose();
    }
}
