using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Model.Training;

namespace FedLora.Model.Tests;

/// <summary>The invariants peft's LoRA tests state, on the GPT.</summary>
public sealed class LoraInvariantTests : IDisposable
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 2, Channels: 32, Heads: 4);
    private readonly CpuBackend _backend = new();
    private readonly Gpt _model;
    private readonly AdapterSet _adapters;
    private readonly int[] _tokens;
    private readonly int[] _targets;

    public LoraInvariantTests()
    {
        _model = new Gpt(_backend, Config, maxBatch: 2, maxTime: 16);
        _model.InitializeParameters(new Random(7));
        _adapters = new AdapterSet(_backend, _model.Layout.LoraModules(LoraTargets.All), rank: 4, alpha: 8, LoraScaling.Standard);
        _adapters.Initialize(new Random(8));
        (_tokens, _targets) = GptGradientTests.RandomBatch(new Random(9), 32, 257, withIgnored: true);
    }

    public void Dispose()
    {
        _adapters.Dispose();
        _model.Dispose();
        _backend.Dispose();
    }

    private float[] Logits()
    {
        _model.Forward(2, 16, _tokens, _targets);
        return _backend.ToArray(_model.Logits);
    }

    private static void AssertClose(float[] expected, float[] actual, float tolerance, string label)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance * (1 + Math.Abs(expected[i])),
                $"{label}: [{i}] expected {expected[i]}, got {actual[i]}");
        }
    }

    [Fact]
    public void FreshAdapter_BIsZero_GivesBaseOutput()
    {
        var baseLogits = Logits();
        _model.Attach(_adapters);
        Assert.Equal(baseLogits, Logits());
    }

    [Fact]
    public void MergedAdapter_EqualsUnmerged()
    {
        GptGradientTests.Randomize(_backend, _adapters.Parameters, new Random(10), 0.2f);
        _model.Attach(_adapters);
        var unmerged = Logits();
        _model.Attach(null);
        for (var m = 0; m < _adapters.Modules.Count; m++)
        {
            _adapters.Adapters[m].Merge(_backend, _model.Layout.View(_model.Parameters, _adapters.Modules[m].Name + ".weight"));
        }
        AssertClose(unmerged, Logits(), 1e-4f, "merged vs unmerged logits");
    }

    [Fact]
    public void MergeThenUnmerge_AddsSBAThenRestoresWeights()
    {
        GptGradientTests.Randomize(_backend, _adapters.Parameters, new Random(11), 0.2f);
        var before = _backend.ToArray(_model.Parameters);
        for (var m = 0; m < _adapters.Modules.Count; m++)
        {
            var adapter = _adapters.Adapters[m];
            var weight = _model.Layout.View(_model.Parameters, _adapters.Modules[m].Name + ".weight");
            var original = _backend.ToArray(weight);

            adapter.Merge(_backend, weight);
            AssertClose(PlusScaledProduct(original, adapter), _backend.ToArray(weight), 1e-5f, $"{_adapters.Modules[m].Name} after merge (W + s B A)");

            adapter.Unmerge(_backend, weight);
            AssertClose(original, _backend.ToArray(weight), 1e-6f, $"{_adapters.Modules[m].Name} after merge + unmerge");
        }
        AssertClose(before, _backend.ToArray(_model.Parameters), 1e-6f, "weights after merge + unmerge");
    }

    /// <summary>W + s B A for W (O,C), B (O,r), A (r,C), in double on the host: the merge written out.</summary>
    private float[] PlusScaledProduct(float[] weight, LoraAdapter adapter)
    {
        var a = _backend.ToArray(adapter.A);
        var b = _backend.ToArray(adapter.B);
        var (o, c, r) = (adapter.OutFeatures, adapter.InFeatures, adapter.Rank);
        Assert.Contains(b, value => value != 0);
        var merged = new float[weight.Length];
        for (var i = 0; i < o; i++)
        {
            for (var j = 0; j < c; j++)
            {
                double sum = 0;
                for (var k = 0; k < r; k++) sum += (double)b[i * r + k] * a[k * c + j];
                merged[i * c + j] = (float)(weight[i * c + j] + adapter.Scale * sum);
            }
        }
        return merged;
    }

    [Fact]
    public void LoraTraining_ChangesOnlyAdapterParameters()
    {
        _model.Attach(_adapters);
        var baseBefore = _backend.ToArray(_model.Parameters);
        var adaptersBefore = _backend.ToArray(_adapters.Parameters);
        using var optimizer = new AdamWOptimizer(_backend, _adapters.Parameters.Length, new AdamWSettings(WeightDecay: 0.01f));
        var first = float.NaN;
        var last = float.NaN;
        for (var step = 0; step < 5; step++)
        {
            _model.ZeroGradients();
            last = _model.Forward(2, 16, _tokens, _targets);
            if (step == 0) first = last;
            _model.Backward();
            optimizer.Step(_adapters.Parameters, _adapters.Gradients, 1e-2f);
        }
        Assert.Equal(baseBefore, _backend.ToArray(_model.Parameters));
        Assert.NotEqual(adaptersBefore, _backend.ToArray(_adapters.Parameters));
        Assert.True(last < first, $"the loss did not fall over 5 LoRA steps on one batch: {first} -> {last}");
    }

    [Fact]
    public void Attach_AdaptersOfAnotherShape_ThrowsAndKeepsTheAttachedSet()
    {
        _model.Attach(_adapters);
        var before = Logits();
        var wrong = new LoraModuleSpec("transformer.h.0.attn.c_attn", 32, 64);
        using var other = new AdapterSet(_backend, [_adapters.Modules[1], wrong], rank: 2, alpha: 4, LoraScaling.Standard);
        var error = Assert.Throws<ArgumentException>(() => _model.Attach(other));
        Assert.Contains("64x32 but the layer is 96x32", error.Message, StringComparison.Ordinal);
        Assert.Same(_adapters, _model.Adapters);
        Assert.Equal(before, Logits());
    }
}
