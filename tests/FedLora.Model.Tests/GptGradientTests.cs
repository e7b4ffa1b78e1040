using FedLora.Kernels;
using FedLora.Kernels.Reference;
using FedLora.Lora;

namespace FedLora.Model.Tests;

/// <summary>The whole model's backward pass against finite differences of its loss.</summary>
public sealed class GptGradientTests : IDisposable
{
    private readonly ReferenceBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    internal static (int[] Tokens, int[] Targets) RandomBatch(Random random, int n, int vocab, bool withIgnored)
    {
        var tokens = new int[n];
        var targets = new int[n];
        for (var i = 0; i < n; i++)
        {
            tokens[i] = random.Next(vocab);
            targets[i] = withIgnored && i % 3 == 0 ? -1 : random.Next(vocab);
        }
        return (tokens, targets);
    }

    internal static void Randomize(Backend backend, BufferView view, Random random, float scale)
    {
        var values = new float[view.Length];
        for (var i = 0; i < values.Length; i++) values[i] = (float)((random.NextDouble() * 2 - 1) * scale);
        backend.Upload(values, view);
    }

    /// <summary>
    /// Compares g . d with (L(theta + eps d) - L(theta - eps d)) / (2 eps) along a random direction d of
    /// the parameters in <paramref name="parameters"/>, whose gradient is <paramref name="gradients"/>.
    /// </summary>
    private void AssertDirectionalDerivative(Gpt model, BufferView parameters, BufferView gradients, int b, int t,
        int[] tokens, int[] targets, string label)
    {
        var random = new Random(99);
        model.ZeroGradients();
        model.Forward(b, t, tokens, targets);
        model.Backward();
        var theta = _backend.ToArray(parameters);
        var grad = _backend.ToArray(gradients);
        var direction = new float[theta.Length];
        for (var i = 0; i < direction.Length; i++) direction[i] = (float)(random.NextDouble() * 2 - 1);
        double analytic = 0;
        for (var i = 0; i < theta.Length; i++) analytic += (double)grad[i] * direction[i];

        const float eps = 2e-3f;
        float LossAt(float sign)
        {
            var shifted = new float[theta.Length];
            for (var i = 0; i < theta.Length; i++) shifted[i] = theta[i] + sign * eps * direction[i];
            _backend.Upload(shifted, parameters);
            return model.Forward(b, t, tokens, targets);
        }
        var numeric = ((double)LossAt(1) - LossAt(-1)) / (2 * eps);
        _backend.Upload(theta, parameters);
        Assert.True(Math.Abs(analytic - numeric) <= 2e-3 + 2e-2 * Math.Abs(numeric),
            $"{label}: analytic directional derivative {analytic:G6}, finite difference {numeric:G6}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Backward_BaseParameters_MatchFiniteDifferences(bool withIgnoredTargets)
    {
        var config = new GptConfig(VocabSize: 257, ContextLength: 8, Layers: 2, Channels: 16, Heads: 4);
        using var model = new Gpt(_backend, config, maxBatch: 2, maxTime: 6);
        model.InitializeParameters(new Random(1));
        Randomize(_backend, model.Parameters, new Random(2), 0.3f);
        model.TrainBase = true;
        var (tokens, targets) = RandomBatch(new Random(3), 2 * 6, 257, withIgnoredTargets);
        AssertDirectionalDerivative(model, model.Parameters, model.ParameterGradients, 2, 6, tokens, targets, "base parameters");
    }

    /// <summary>
    /// With the base frozen the backward ends at the first adapted linear; the adapter gradients must
    /// equal those of a backward that runs to the embeddings (base trained too), for any targets.
    /// </summary>
    [Theory]
    [InlineData(LoraTargets.All)]
    [InlineData(LoraTargets.MlpUp)]
    [InlineData(LoraTargets.AttentionProjection | LoraTargets.MlpDown)]
    public void Backward_FrozenBase_GivesTheSameAdapterGradientsAsAFullBackward(LoraTargets loraTargets)
    {
        var config = new GptConfig(VocabSize: 257, ContextLength: 8, Layers: 2, Channels: 16, Heads: 2);
        using var model = new Gpt(_backend, config, maxBatch: 2, maxTime: 5);
        model.InitializeParameters(new Random(4));
        using var adapters = new AdapterSet(_backend, model.Layout.LoraModules(loraTargets), rank: 4, alpha: 8, LoraScaling.Standard);
        Randomize(_backend, adapters.Parameters, new Random(5), 0.3f);
        model.Attach(adapters);
        var (tokens, targets) = RandomBatch(new Random(6), 2 * 5, 257, withIgnored: true);
        float[] AdapterGradients(bool trainBase)
        {
            model.TrainBase = trainBase;
            model.ZeroGradients();
            model.Forward(2, 5, tokens, targets);
            model.Backward();
            return _backend.ToArray(adapters.Gradients);
        }
        var full = AdapterGradients(trainBase: true);
        var frozen = AdapterGradients(trainBase: false);
        Assert.Contains(full, g => g != 0f);
        for (var i = 0; i < full.Length; i++)
        {
            Assert.True(full[i] == frozen[i], $"adapter gradient {i}: {frozen[i]:G9} with the base frozen, {full[i]:G9} with a full backward");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Backward_LoraParameters_MatchFiniteDifferences(bool sketched)
    {
        var config = new GptConfig(VocabSize: 257, ContextLength: 8, Layers: 2, Channels: 16, Heads: 2);
        using var model = new Gpt(_backend, config, maxBatch: 2, maxTime: 5);
        model.InitializeParameters(new Random(4));
        using var adapters = new AdapterSet(_backend, model.Layout.LoraModules(LoraTargets.All), rank: 4, alpha: 8, LoraScaling.Standard);
        Randomize(_backend, adapters.Parameters, new Random(5), 0.3f);
        if (sketched)
        {
            for (var m = 0; m < adapters.Modules.Count; m++) adapters.SetSketch(m, m % 2 == 0 ? [3, 1] : [0, 2, 1]);
        }
        model.Attach(adapters);
        var (tokens, targets) = RandomBatch(new Random(6), 2 * 5, 257, withIgnored: true);
        AssertDirectionalDerivative(model, adapters.Parameters, adapters.Gradients, 2, 5, tokens, targets, "LoRA parameters");
    }
}
