using System.Globalization;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Reference;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using Xunit.Abstractions;

namespace FedLora.Model.Tests.HuggingFace;

/// <summary>The committed Hugging Face GPT-2 fixtures (tests/pytorch/make_hf_gpt2_fixture.py) and helpers to compare with them.</summary>
internal static class HfFixture
{
    public static readonly SafetensorsFile Truth = SafetensorsFile.Load(RepoPaths.Fixture("hf_gpt2_tiny.safetensors"));

    public static string Folder => RepoPaths.Fixture("hf-gpt2-tiny");

    public static string ShardedBf16Folder => RepoPaths.Fixture("hf-gpt2-tiny-bf16-sharded");

    public static string PeftFolder => RepoPaths.Fixture("hf-gpt2-tiny-peft");

    public static int[] Tokens => Truth.ReadInt32s("batch.tokens");

    public static int[] Targets => Truth.ReadInt32s("batch.targets");

    public static (int B, int T) Shape => (Truth.GetInfo("batch.tokens").Shape[0], Truth.GetInfo("batch.tokens").Shape[1]);

    public static float Meta(string key) => float.Parse(Truth.Metadata[key], CultureInfo.InvariantCulture);

    public static Backend Create(string name) => name == "cpu" ? new CpuBackend() : new ReferenceBackend();

    /// <summary>LoRA on every linear of <paramref name="model"/>, holding the fixture's factors (lora.NAME.lora_A and lora_B).</summary>
    public static AdapterSet TruthAdapters(Backend backend, Gpt model)
    {
        var adapters = new AdapterSet(backend, model.Layout.LoraModules(LoraTargets.All), (int)Meta("lora_rank"), Meta("lora_alpha"), LoraScaling.Standard);
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var name = adapters.Modules[m].Name;
            backend.Upload(Truth.ReadFloats($"lora.{name}.lora_A"), adapters.Adapters[m].A);
            backend.Upload(Truth.ReadFloats($"lora.{name}.lora_B"), adapters.Adapters[m].B);
        }
        return adapters;
    }

    /// <summary>Every row's logits of the last forward pass, whether or not the head held them whole.</summary>
    public static float[] AllLogits(Gpt model, int rows)
    {
        var v = model.Config.VocabSize;
        var all = new float[rows * v];
        for (var row = 0; row < rows; row++) model.CopyLogits(row, all.AsSpan(row * v, v));
        return all;
    }

    /// <summary>Copies a folder (not recursive) to a new temporary one, for tests that corrupt it.</summary>
    public static TempDirectory CopyOf(string folder)
    {
        var copy = new TempDirectory();
        foreach (var file in Directory.GetFiles(folder)) File.Copy(file, copy.File(Path.GetFileName(file)));
        return copy;
    }

    public static void AssertClose(ITestOutputHelper output, string name, ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, float abs, float rel)
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
        Assert.True(first < 0, first < 0 ? "" : $"{name}[{first}]: expected {expected[first]:R}, got {actual[first]:R} (max |diff| {maxDiff:E2})");
    }
}
