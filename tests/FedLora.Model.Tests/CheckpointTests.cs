using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Lora.Safetensors;

namespace FedLora.Model.Tests;

public sealed class CheckpointTests : IDisposable
{
    private static readonly GptConfig Config = new(VocabSize: 257, ContextLength: 12, Layers: 2, Channels: 16, Heads: 2);
    private readonly CpuBackend _backend = new();
    private readonly string _directory = Directory.CreateTempSubdirectory("fedlora-checkpoint-").FullName;
    private readonly int[] _tokens = Enumerable.Range(0, 24).Select(i => (i * 37) % 257).ToArray();

    public void Dispose()
    {
        _backend.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    private float[] Logits(Gpt model)
    {
        model.Forward(2, 12, _tokens);
        return _backend.ToArray(model.Logits);
    }

    [Fact]
    public void SaveThenLoad_Checkpoint_KeepsOutputs()
    {
        using var model = new Gpt(_backend, Config, 2, 12);
        model.InitializeParameters(new Random(1));
        var path = Path.Combine(_directory, "base.safetensors");
        GptCheckpoint.Save(model, path);
        using var loaded = GptCheckpoint.Load(path, _backend, 2, 12);
        Assert.Equal(Config, loaded.Config);
        Assert.Equal(Logits(model), Logits(loaded));
    }

    [Fact]
    public void Save_Conv1DWeights_AreStoredInHuggingFaceLayout()
    {
        using var model = new Gpt(_backend, Config, 1, 12);
        model.InitializeParameters(new Random(2));
        var path = Path.Combine(_directory, "hf.safetensors");
        GptCheckpoint.Save(model, path);
        var file = SafetensorsFile.Load(path);
        // c_fc maps C=16 to 4C=64: HF's Conv1D stores it as (in, out) = (16, 64).
        Assert.True(file.GetInfo("transformer.h.0.mlp.c_fc.weight").HasShape(16, 64));
        var ours = _backend.ToArray(model.Layout.View(model.Parameters, "transformer.h.0.mlp.c_fc.weight"));
        var stored = file.ReadFloats("transformer.h.0.mlp.c_fc.weight");
        Assert.Equal(ours[5 * 16 + 3], stored[3 * 64 + 5]);
    }

    [Fact]
    public void LoadWeights_MissingTensor_ThrowsAndLeavesModelUntouched()
    {
        using var model = new Gpt(_backend, Config, 1, 12);
        model.InitializeParameters(new Random(3));
        var writer = new SafetensorsWriter();
        writer.AddFloats("transformer.wte.weight", new float[257 * 16], 257, 16);
        var file = SafetensorsFile.Parse(writer.ToArray(), "partial.safetensors");
        var before = _backend.ToArray(model.Parameters);
        var error = Assert.Throws<InvalidDataException>(() => GptCheckpoint.LoadWeights(file, model));
        Assert.Contains("transformer.wpe.weight", error.Message, StringComparison.Ordinal);
        Assert.Equal(before, _backend.ToArray(model.Parameters));
    }

    [Fact]
    public void SaveThenLoad_Adapters_KeepOutputs()
    {
        using var model = new Gpt(_backend, Config, 2, 12);
        model.InitializeParameters(new Random(4));
        using var adapters = new AdapterSet(_backend, model.Layout.LoraModules(LoraTargets.AttentionQkv | LoraTargets.MlpDown), 4, 8, LoraScaling.Standard);
        GptGradientTests.Randomize(_backend, adapters.Parameters, new Random(5), 0.2f);
        model.Attach(adapters);
        var expected = Logits(model);
        var path = Path.Combine(_directory, "adapter_model.safetensors");
        AdapterFile.Save(adapters, path);

        using var restored = new AdapterSet(_backend, adapters.Modules, 4, 8, LoraScaling.Standard);
        AdapterFile.Load(SafetensorsFile.Load(path), restored);
        model.Attach(restored);
        Assert.Equal(expected, Logits(model));
    }

    [Fact]
    public void LoadAdapters_OtherRank_ThrowsNamingBoth()
    {
        using var model = new Gpt(_backend, Config, 1, 12);
        using var adapters = new AdapterSet(_backend, model.Layout.LoraModules(LoraTargets.All), 4, 8, LoraScaling.Standard);
        var path = Path.Combine(_directory, "rank4.safetensors");
        AdapterFile.Save(adapters, path);
        using var other = new AdapterSet(_backend, adapters.Modules, 2, 8, LoraScaling.Standard);
        var error = Assert.Throws<InvalidDataException>(() => AdapterFile.Load(SafetensorsFile.Load(path), other));
        Assert.Contains("rank 4, expected 2", error.Message, StringComparison.Ordinal);
    }
}
