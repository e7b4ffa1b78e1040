using FedLora.Kernels;
using FedLora.Model.HuggingFace;
using FedLora.Model.Training;
using Xunit.Abstractions;

namespace FedLora.Model.Tests.HuggingFace;

/// <summary>
/// A Hugging Face GPT2LMHeadModel folder written by the torch script: FedLora must reproduce its logits
/// (F32 single file, BF16 shards), and with a LoRA on all four linears PyTorch's loss, every LoRA
/// gradient and 5 AdamW steps, with the head whole and in chunks of rows that do not divide B*T.
/// </summary>
public sealed class HuggingFaceGpt2Tests(ITestOutputHelper output)
{
    public static TheoryData<string, int?> BackendsAndChunks() => new() { { "reference", null }, { "cpu", null }, { "cpu", 5 }, { "reference", 3 } };

    [Theory]
    [InlineData("reference")]
    [InlineData("cpu")]
    public void Load_F32Folder_MatchesHfLogits(string backendName)
    {
        using var backend = HfFixture.Create(backendName);
        var (b, t) = HfFixture.Shape;
        var loaded = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t);
        using var model = loaded.Model;
        Assert.Equal(new GptConfig(317, 32, 2, 32, 4), model.Config);
        Assert.Equal(316, loaded.Tokenizer.EndOfText);
        model.Forward(b, t, HfFixture.Tokens);
        HfFixture.AssertClose(output, "base.logits", HfFixture.Truth.ReadFloats("base.logits"), backend.ToArray(model.Logits), 2e-5f, 1e-4f);
    }

    [Fact]
    public void Load_ShardedBf16FolderWithoutPrefix_MatchesBf16Logits()
    {
        using var backend = HfFixture.Create("cpu");
        var (b, t) = HfFixture.Shape;
        using var model = HuggingFaceGpt2.Load(HfFixture.ShardedBf16Folder, backend, b, t).Model;
        model.Forward(b, t, HfFixture.Tokens);
        HfFixture.AssertClose(output, "bf16.logits", HfFixture.Truth.ReadFloats("bf16.logits"), backend.ToArray(model.Logits), 2e-5f, 1e-4f);
    }

    [Theory, MemberData(nameof(BackendsAndChunks))]
    public void LoraStep_HfFolder_MatchesPeftForwardBackwardAndAdamW(string backendName, int? logitRows)
    {
        using var backend = HfFixture.Create(backendName);
        var (b, t) = HfFixture.Shape;
        var (tokens, targets) = (HfFixture.Tokens, HfFixture.Targets);
        using var model = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t, logitRows).Model;
        Assert.Equal(logitRows ?? b * t, model.LogitRows);
        using var adapters = HfFixture.TruthAdapters(backend, model);
        model.Attach(adapters);

        model.ZeroGradients();
        var loss = model.Forward(b, t, tokens, targets);
        HfFixture.AssertClose(output, "logits", HfFixture.Truth.ReadFloats("out.logits"), HfFixture.AllLogits(model, b * t), 2e-5f, 1e-4f);
        HfFixture.AssertClose(output, "loss", HfFixture.Truth.ReadFloats("out.loss"), [loss], 1e-5f, 1e-5f);
        model.Backward();
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var name = adapters.Modules[m].Name;
            HfFixture.AssertClose(output, $"grad.{name}.lora_A", HfFixture.Truth.ReadFloats($"grad.{name}.lora_A"), backend.ToArray(adapters.GradientOfA(m)), 2e-6f, 1e-3f);
            HfFixture.AssertClose(output, $"grad.{name}.lora_B", HfFixture.Truth.ReadFloats($"grad.{name}.lora_B"), backend.ToArray(adapters.GradientOfB(m)), 2e-6f, 1e-3f);
        }

        var settings = new AdamWSettings(HfFixture.Meta("adamw_lr"), HfFixture.Meta("adamw_beta1"), HfFixture.Meta("adamw_beta2"), HfFixture.Meta("adamw_eps"), HfFixture.Meta("adamw_weight_decay"));
        using var optimizer = new AdamWOptimizer(backend, adapters.Parameters.Length, settings);
        var expected = HfFixture.Truth.ReadFloats("train.losses");
        var losses = new float[expected.Length];
        for (var step = 0; step < losses.Length; step++)
        {
            model.ZeroGradients();
            // The steps take the head's gradient from the forward pass (the first Backward above recomputed it).
            losses[step] = model.Forward(b, t, tokens, targets, training: true);
            model.Backward();
            optimizer.Step(adapters.Parameters, adapters.Gradients, settings.LearningRate);
        }
        HfFixture.AssertClose(output, "train.losses", expected, losses, 1e-5f, 1e-5f);
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var name = adapters.Modules[m].Name;
            HfFixture.AssertClose(output, $"train.{name}.lora_A", HfFixture.Truth.ReadFloats($"train.{name}.lora_A"), backend.ToArray(adapters.Adapters[m].A), 1e-6f, 1e-4f);
            HfFixture.AssertClose(output, $"train.{name}.lora_B", HfFixture.Truth.ReadFloats($"train.{name}.lora_B"), backend.ToArray(adapters.Adapters[m].B), 1e-6f, 1e-4f);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(31)]
    public void ChunkedHead_FullTraining_GivesTheWholeHeadsLossesAndGradients(int logitRows)
    {
        // Base training too: the tied embedding's gradient from the head must sum over every chunk.
        using var backend = HfFixture.Create("cpu");
        var (b, t) = HfFixture.Shape;
        using var whole = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t).Model;
        using var chunked = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t, logitRows).Model;
        var gradients = new List<float[]>();
        var losses = new List<float[]>();
        foreach (var model in new[] { whole, chunked })
        {
            model.TrainBase = true;
            model.ZeroGradients();
            model.Forward(b, t, HfFixture.Tokens, HfFixture.Targets);
            model.Backward();
            gradients.Add(backend.ToArray(model.ParameterGradients));
        }
        // Per-position losses after Backward (which recomputed the chunks) are those of the forward pass.
        foreach (var model in new[] { whole, chunked }) losses.Add([model.Forward(b, t, HfFixture.Tokens, HfFixture.Targets)]);
        HfFixture.AssertClose(output, "loss", losses[0], losses[1], 0f, 1e-6f);
        HfFixture.AssertClose(output, "base gradients", gradients[0], gradients[1], 1e-7f, 1e-5f);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(32)]
    public void HeadGradientInForward_GivesTheBackwardsGradientsBitForBit(int logitRows)
    {
        using var backend = HfFixture.Create("cpu");
        var (b, t) = HfFixture.Shape;
        var results = new List<(float Loss, float[] Lora, float[] Base, float[] Logits)>();
        foreach (var training in new[] { false, true })
        {
            using var model = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t, logitRows).Model;
            using var adapters = HfFixture.TruthAdapters(backend, model);
            model.Attach(adapters);
            model.ZeroGradients();
            var loss = model.Forward(b, t, HfFixture.Tokens, HfFixture.Targets, training);
            model.Backward();
            var lora = backend.ToArray(adapters.Gradients);
            // The logits gradient overwrote the held logits: they are computed again when asked for.
            var logits = logitRows >= b * t ? backend.ToArray(model.Logits) : HfFixture.AllLogits(model, b * t);
            model.Forward(b, t, HfFixture.Tokens);
            Assert.Equal(HfFixture.AllLogits(model, b * t), logits);
            // Base training switched on after a training pass: the head's backward must still run for the tied embedding.
            model.ZeroGradients();
            model.Forward(b, t, HfFixture.Tokens, HfFixture.Targets, training);
            model.TrainBase = true;
            model.ZeroGradients();
            model.Backward();
            results.Add((loss, lora, backend.ToArray(model.ParameterGradients), logits));
        }
        Assert.Equal(results[0].Loss, results[1].Loss);
        Assert.Equal(results[0].Lora, results[1].Lora);
        Assert.Equal(results[0].Base, results[1].Base);
        Assert.Equal(results[0].Logits, results[1].Logits);
        Assert.Contains(results[1].Lora, g => g != 0f);
        Assert.Contains(results[1].Base, g => g != 0f);
    }

    [Fact]
    public void ChunkedHead_Logits_RefusesWholeViewButCopiesEveryRow()
    {
        using var backend = HfFixture.Create("cpu");
        var (b, t) = HfFixture.Shape;
        using var whole = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t).Model;
        using var chunked = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t, 7).Model;
        whole.Forward(b, t, HfFixture.Tokens);
        chunked.Forward(b, t, HfFixture.Tokens);
        var e = Assert.Throws<InvalidOperationException>(() => chunked.Logits);
        Assert.Contains("CopyLogits", e.Message, StringComparison.Ordinal);
        // Rows out of order, so some are recomputed and some are in the held chunk.
        var v = whole.Config.VocabSize;
        var expected = backend.ToArray(whole.Logits);
        var row = new float[v];
        foreach (var r in new[] { 31, 0, 30, 6, 7, 29 })
        {
            chunked.CopyLogits(r, row);
            HfFixture.AssertClose(output, $"row {r}", expected.AsSpan(r * v, v), row, 1e-6f, 1e-5f);
        }
    }
}
