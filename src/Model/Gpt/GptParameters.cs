using FedLora.Kernels;
using FedLora.Lora;

namespace FedLora.Model;

/// <summary>One named base tensor inside the model's parameter buffer.</summary>
/// <param name="Name">Hugging Face GPT-2 name, e.g. "transformer.h.0.attn.c_attn.weight".</param>
/// <param name="Shape">Shape in FedLora's layout; linear weights are (O,C).</param>
/// <param name="Offset">Offset in floats within the parameter buffer.</param>
/// <param name="IsConv1DWeight">True for linear weights, which HF GPT-2 stores transposed as (C,O).</param>
public sealed record ParameterTensor(string Name, int[] Shape, int Offset, bool IsConv1DWeight)
{
    /// <summary>Number of floats.</summary>
    public int Length
    {
        get
        {
            var length = 1;
            foreach (var d in Shape) length *= d;
            return length;
        }
    }
}

/// <summary>Which linear layers of each block carry LoRA adapters.</summary>
[Flags]
public enum LoraTargets
{
    /// <summary>No adapters.</summary>
    None = 0,

    /// <summary>attn.c_attn, the fused qkv projection (C -> 3C).</summary>
    AttentionQkv = 1,

    /// <summary>attn.c_proj, the attention output projection (C -> C).</summary>
    AttentionProjection = 2,

    /// <summary>mlp.c_fc, the MLP's up projection (C -> 4C).</summary>
    MlpUp = 4,

    /// <summary>mlp.c_proj, the MLP's down projection (4C -> C).</summary>
    MlpDown = 8,

    /// <summary>All four.</summary>
    All = AttentionQkv | AttentionProjection | MlpUp | MlpDown,
}

/// <summary>
/// The layout of a GPT's base weights in one contiguous buffer (llm.c's memory plan), block by
/// block, with Hugging Face GPT-2 names. Linear weights are stored (O,C) for the kernels.
/// </summary>
public sealed class GptParameters
{
    private readonly Dictionary<string, ParameterTensor> _byName = [];

    /// <summary>Lays out the tensors of <paramref name="config"/>.</summary>
    public GptParameters(GptConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var c = config.Channels;
        var tensors = new List<ParameterTensor>();
        var offset = 0;
        void Add(string name, bool conv1D, params int[] shape)
        {
            var tensor = new ParameterTensor(name, shape, offset, conv1D);
            tensors.Add(tensor);
            _byName.Add(name, tensor);
            offset = checked(offset + tensor.Length);
        }

        Add("transformer.wte.weight", false, config.VocabSize, c);
        Add("transformer.wpe.weight", false, config.ContextLength, c);
        for (var l = 0; l < config.Layers; l++)
        {
            var h = $"transformer.h.{l}.";
            Add(h + "ln_1.weight", false, c);
            Add(h + "ln_1.bias", false, c);
            Add(h + "attn.c_attn.weight", true, 3 * c, c);
            Add(h + "attn.c_attn.bias", false, 3 * c);
            Add(h + "attn.c_proj.weight", true, c, c);
            Add(h + "attn.c_proj.bias", false, c);
            Add(h + "ln_2.weight", false, c);
            Add(h + "ln_2.bias", false, c);
            Add(h + "mlp.c_fc.weight", true, 4 * c, c);
            Add(h + "mlp.c_fc.bias", false, 4 * c);
            Add(h + "mlp.c_proj.weight", true, c, 4 * c);
            Add(h + "mlp.c_proj.bias", false, c);
        }
        Add("transformer.ln_f.weight", false, c);
        Add("transformer.ln_f.bias", false, c);
        Tensors = tensors;
        Length = offset;
    }

    /// <summary>The model shape the layout is for.</summary>
    public GptConfig Config { get; }

    /// <summary>Every tensor, in buffer order.</summary>
    public IReadOnlyList<ParameterTensor> Tensors { get; }

    /// <summary>Total floats.</summary>
    public int Length { get; }

    /// <summary>The tensor called <paramref name="name"/>.</summary>
    public ParameterTensor this[string name] =>
        _byName.TryGetValue(name, out var tensor) ? tensor : throw new KeyNotFoundException($"the GPT has no parameter '{name}'");

    /// <summary>Whether a tensor called <paramref name="name"/> exists.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The view of tensor <paramref name="name"/> in <paramref name="buffer"/>.</summary>
    public BufferView View(DeviceBuffer buffer, string name)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        var tensor = this[name];
        return buffer.View(tensor.Offset, tensor.Length);
    }

    /// <summary>The adaptable linear layers of the blocks, in block order, restricted to <paramref name="targets"/>.</summary>
    public IReadOnlyList<LoraModuleSpec> LoraModules(LoraTargets targets)
    {
        var c = Config.Channels;
        var modules = new List<LoraModuleSpec>();
        for (var l = 0; l < Config.Layers; l++)
        {
            var h = $"transformer.h.{l}.";
            if (targets.HasFlag(LoraTargets.AttentionQkv)) modules.Add(new LoraModuleSpec(h + "attn.c_attn", c, 3 * c));
            if (targets.HasFlag(LoraTargets.AttentionProjection)) modules.Add(new LoraModuleSpec(h + "attn.c_proj", c, c));
            if (targets.HasFlag(LoraTargets.MlpUp)) modules.Add(new LoraModuleSpec(h + "mlp.c_fc", c, 4 * c));
            if (targets.HasFlag(LoraTargets.MlpDown)) modules.Add(new LoraModuleSpec(h + "mlp.c_proj", 4 * c, c));
        }
        return modules;
    }

    /// <summary>
    /// GPT-2's initialisation (as llm.c's train_gpt2.py): weights N(0, 0.02), the residual
    /// projections (c_proj) N(0, 0.02/sqrt(2L)), biases 0, layernorm weights 1.
    /// </summary>
    public float[] Initialize(Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var values = new float[Length];
        var projectionStd = 0.02 / Math.Sqrt(2.0 * Config.Layers);
        foreach (var tensor in Tensors)
        {
            var span = values.AsSpan(tensor.Offset, tensor.Length);
            if (tensor.Name.Contains("ln_", StringComparison.Ordinal))
            {
                span.Fill(tensor.Name.EndsWith(".weight", StringComparison.Ordinal) ? 1f : 0f);
            }
            else if (tensor.Shape.Length == 2)
            {
                var std = tensor.Name.EndsWith("c_proj.weight", StringComparison.Ordinal) ? projectionStd : 0.02;
                for (var i = 0; i < span.Length; i++) span[i] = (float)(std * Gaussian(random));
            }
        }
        return values;
    }

    private static double Gaussian(Random random)
    {
        // Box-Muller; 1 - NextDouble() is in (0, 1], so the log is finite.
        var u1 = 1.0 - random.NextDouble();
        var u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
    }
}
