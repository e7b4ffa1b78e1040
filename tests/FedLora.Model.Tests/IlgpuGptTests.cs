using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Ilgpu;
using FedLora.Lora;
using FedLora.Model.Training;

namespace FedLora.Model.Tests;

/// <summary>
/// The GPT's whole training step (forward, backward, gradient clipping, AdamW, LoRA with a sketch) on
/// ILGPU's CPU accelerator matches the Cpu backend over several steps: every ILGPU kernel together, on
/// views of the model's buffers, in the order the model queues them.
/// </summary>
public sealed class IlgpuGptTests
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 16, Layers: 2, Channels: 32, Heads: 4);
    private const int Batch = 2, Time = 16;

    private static (float[] Losses, float[] Trained) Train(Backend backend, bool lora, int steps)
    {
        using var model = new Gpt(backend, Config, Batch, Time);
        model.InitializeParameters(new Random(11));
        using var adapters = new AdapterSet(backend, model.Layout.LoraModules(LoraTargets.All), rank: 4, alpha: 8, LoraScaling.Standard);
        GptGradientTests.Randomize(backend, adapters.Parameters, new Random(12), 0.1f);
        if (lora)
        {
            // A sketch: only ranks 3 and 1 of the first module train, as an FSLoRA client's would.
            adapters.SetSketch(0, [3, 1]);
            model.Attach(adapters);
        }
        model.TrainBase = !lora;
        var trainable = lora ? adapters.Parameters : model.Parameters;
        var gradients = lora ? adapters.Gradients : model.ParameterGradients;
        using var optimizer = new AdamWOptimizer(backend, trainable.Length, new AdamWSettings(LearningRate: 1e-2f, WeightDecay: 0.01f), maxGradientNorm: 1f);
        var (tokens, targets) = GptGradientTests.RandomBatch(new Random(13), Batch * Time, 257, withIgnored: true);
        var losses = new float[steps];
        for (var step = 0; step < steps; step++)
        {
            model.ZeroGradients();
            losses[step] = model.Forward(Batch, Time, tokens, targets);
            model.Backward();
            optimizer.Step(trainable, gradients, 1e-2f);
        }
        return (losses, backend.ToArray(trainable));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TrainingSteps_OnIlgpuCpu_MatchCpu(bool lora)
    {
        using var cpu = new CpuBackend();
        using var ilgpu = IlgpuBackend.Create(IlgpuDevices.CpuSpec);
        var expected = Train(cpu, lora, steps: 4);
        var actual = Train(ilgpu, lora, steps: 4);
        for (var step = 0; step < expected.Losses.Length; step++)
        {
            Assert.True(Math.Abs(expected.Losses[step] - actual.Losses[step]) <= 1e-4 * Math.Abs(expected.Losses[step]),
                $"step {step}: Cpu loss {expected.Losses[step]}, ilgpu-cpu {actual.Losses[step]}");
        }
        Assert.True(expected.Losses[^1] < expected.Losses[0], "the steps did not lower the loss");
        // AdamW moves a weight by up to lr = 1e-2 a step whatever its gradient's size, so float-level
        // differences in tiny gradients can show as ~1e-5 in the weights after 4 steps.
        Kernels.Tests.Twin.AssertClose(expected.Trained, actual.Trained, 1e-4f, 1e-3f, lora ? "adapters after 4 steps" : "weights after 4 steps");
    }
}
