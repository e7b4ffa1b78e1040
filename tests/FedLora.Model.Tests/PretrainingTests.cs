using FedLora.Kernels.Cpu;
using FedLora.Model.Data;
using FedLora.Model.Tokenization;
using FedLora.Model.Training;

namespace FedLora.Model.Tests;

/// <summary>The whole training path learns: a small GPT trained on Tiny Shakespeare beats the uniform-byte loss by far.</summary>
public sealed class PretrainingTests
{
    [Fact]
    public void Pretrain_ThreeHundredStepsOnShakespeare_BringsHeldOutLossWellBelowUniform()
    {
        var tokens = ByteTokenizer.Instance.Encode(TinyShakespeare.LoadText(RepoPaths.Data("tinyshakespeare", "input.txt")));
        var (train, heldOut) = DataSplit.Tail(tokens, 0.1);
        const int Batch = 8, Time = 64;
        using var backend = new CpuBackend();
        var config = new GptConfig(ByteTokenizer.VocabSize, Time, Layers: 2, Channels: 64, Heads: 4);
        using var model = new Gpt(backend, config, Batch, Time) { TrainBase = true };
        model.InitializeParameters(new Random(1));
        var evaluation = TextBatcher.InOrder(heldOut, Batch, Time).Take(8).ToList();
        var before = LocalTrainer.Evaluate(model, evaluation).Loss;

        var options = new TrainingOptions(Steps: 300, LearningRate: 3e-3f, WarmupSteps: 20, MinimumLearningRateFraction: 0.1f);
        LocalTrainer.Train(model, model.Parameters, model.ParameterGradients, new TextBatcher(train, Batch, Time, seed: 2), options);
        var after = LocalTrainer.Evaluate(model, evaluation).Loss;

        var uniform = Math.Log(ByteTokenizer.VocabSize);
        Assert.InRange(before, uniform - 0.2, uniform + 0.2);
        Assert.True(after < uniform - 2.0, $"held-out loss {after:0.000} after 300 steps; uniform bytes give {uniform:0.000}");
    }
}
