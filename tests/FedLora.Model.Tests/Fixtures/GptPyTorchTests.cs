using System.Globalization;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Reference;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Model.Training;
using Xunit.Abstractions;

namespace FedLora.Model.Tests.Fixtures;

/// <summary>
/// llm.c's test_gpt2, for FedLora: the GPT with LoRA, loaded with the weights PyTorch wrote
/// (tests/pytorch/make_gpt_fixture.py), must reproduce PyTorch's logits, loss, every gradient and the
/// losses and adapters of 5 AdamW steps. The max difference per tensor is printed.
/// </summary>
public sealed class GptPyTorchTests(ITestOutputHelper output)
{
    private static readonly SafetensorsFile Fixture = SafetensorsFile.Load(RepoPaths.Fixture("gpt_lora_tiny.safetensors"));

    public static TheoryData<string> Backends() => ["reference", "cpu"];

    private static Backend Create(string name) => name == "cpu" ? new CpuBackend() : new ReferenceBackend();

    private static float Meta(string key) => float.Parse(Fixture.Metadata[key], CultureInfo.InvariantCulture);

    private void AssertClose(string name, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, float abs, float rel)
    {
        Assert.Equal(expected.Length, actual.Length);
        var maxDiff = 0.0;
        var first = -1;
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs((double)expected[i] - actual[i]);
            if (!(diff <= maxDiff)) maxDiff = diff;
            if (first < 0 && !(diff <= abs + rel * Math.Abs(expected[i]))) first = i;
        }
        output.WriteLine($"{name}: max |diff| {maxDiff:E2} over {expected.Length} values");
        Assert.True(first < 0, first < 0 ? "" : $"{name}[{first}]: PyTorch {expected[first]:R}, FedLora {actual[first]:R} (max |diff| {maxDiff:E2})");
    }

    [Theory, MemberData(nameof(Backends))]
    public void Gpt_FixtureBatch_MatchesPyTorchForwardBackwardAndAdamW(string backendName)
    {
        using var backend = Create(backendName);
        var config = GptCheckpoint.ReadConfig(Fixture);
        var tokens = Fixture.ReadInt32s("batch.tokens");
        var targets = Fixture.ReadInt32s("batch.targets");
        var (b, t) = (Fixture.GetInfo("batch.tokens").Shape[0], Fixture.GetInfo("batch.tokens").Shape[1]);
        using var model = new Gpt(backend, config, b, t);
        GptCheckpoint.LoadWeights(Fixture, model);
        var rank = (int)Meta("lora_rank");
        using var adapters = new AdapterSet(backend, model.Layout.LoraModules(LoraTargets.All), rank, Meta("lora_alpha"), LoraScaling.Standard);
        AdapterFile.Load(Fixture, adapters);
        model.Attach(adapters);

        // Forward and backward with every parameter trainable.
        model.TrainBase = true;
        model.ZeroGradients();
        var loss = model.Forward(b, t, tokens, targets);
        AssertClose("logits", Fixture.ReadFloats("out.logits"), backend.ToArray(model.Logits), 1e-5f, 1e-4f);
        AssertClose("loss", Fixture.ReadFloats("out.loss"), [loss], 1e-5f, 1e-5f);
        model.Backward();
        var baseGrads = backend.ToArray(model.ParameterGradients);
        foreach (var tensor in model.Layout.Tensors)
        {
            AssertClose("grad." + tensor.Name, Fixture.ReadFloats("grad." + tensor.Name), baseGrads.AsSpan(tensor.Offset, tensor.Length), 2e-6f, 1e-3f);
        }
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var name = adapters.Modules[m].Name;
            AssertClose($"grad.{name}.lora_A", Fixture.ReadFloats($"grad.{name}.lora_A.weight"), backend.ToArray(adapters.GradientOfA(m)), 2e-6f, 1e-3f);
            AssertClose($"grad.{name}.lora_B", Fixture.ReadFloats($"grad.{name}.lora_B.weight"), backend.ToArray(adapters.GradientOfB(m)), 2e-6f, 1e-3f);
        }

        // Five AdamW steps on the adapters alone, base frozen, on the same batch.
        model.TrainBase = false;
        var settings = new AdamWSettings(Meta("adamw_lr"), Meta("adamw_beta1"), Meta("adamw_beta2"), Meta("adamw_eps"), Meta("adamw_weight_decay"));
        using var optimizer = new AdamWOptimizer(backend, adapters.Parameters.Length, settings);
        var expectedLosses = Fixture.ReadFloats("train.losses");
        var losses = new float[expectedLosses.Length];
        for (var step = 0; step < losses.Length; step++)
        {
            model.ZeroGradients();
            losses[step] = model.Forward(b, t, tokens, targets);
            model.Backward();
            optimizer.Step(adapters.Parameters, adapters.Gradients, settings.LearningRate);
        }
        AssertClose("train.losses", expectedLosses, losses, 1e-5f, 1e-5f);
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var name = adapters.Modules[m].Name;
            AssertClose($"train.{name}.lora_A", Fixture.ReadFloats($"train.{name}.lora_A.weight"), backend.ToArray(adapters.Adapters[m].A), 1e-6f, 1e-4f);
            AssertClose($"train.{name}.lora_B", Fixture.ReadFloats($"train.{name}.lora_B.weight"), backend.ToArray(adapters.Adapters[m].B), 1e-6f, 1e-4f);
        }
    }
}
