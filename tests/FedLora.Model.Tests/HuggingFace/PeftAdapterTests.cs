using System.Text.Json.Nodes;
using FedLora.Lora;
using FedLora.Model.HuggingFace;
using Xunit.Abstractions;

namespace FedLora.Model.Tests.HuggingFace;

/// <summary>peft adapter folders both ways: peft's own (with rank and alpha patterns) gives peft's logits; FedLora's round-trips.</summary>
public sealed class PeftAdapterTests(ITestOutputHelper output)
{
    [Fact]
    public void Open_PeftFolderWithRankAndAlphaPatterns_GivesPeftsLogits()
    {
        using var backend = HfFixture.Create("cpu");
        var (b, t) = HfFixture.Shape;
        using var model = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t).Model;
        using var adapters = PeftAdapter.Open(HfFixture.PeftFolder, backend);
        Assert.Equal(4, adapters.Rank);
        Assert.Equal(8, adapters.Modules.Count);
        model.Attach(adapters);
        model.Forward(b, t, HfFixture.Tokens);
        HfFixture.AssertClose(output, "peft.logits", HfFixture.Truth.ReadFloats("peft.logits"), backend.ToArray(model.Logits), 2e-5f, 1e-4f);
    }

    [Fact]
    public void SaveThenOpen_FedLoraAdapter_SameTensorsSameLogitsAndAPeftConfig()
    {
        using var backend = HfFixture.Create("cpu");
        var (b, t) = HfFixture.Shape;
        using var model = HuggingFaceGpt2.Load(HfFixture.Folder, backend, b, t).Model;
        using var adapters = new AdapterSet(backend, model.Layout.LoraModules(LoraTargets.All), 3, 5f, LoraScaling.Standard);
        adapters.Initialize(new Random(7));
        var random = new Random(8);
        foreach (var adapter in adapters.Adapters)
        {
            backend.Upload(Enumerable.Range(0, adapter.B.Length).Select(_ => (float)random.NextDouble() - 0.5f).ToArray(), adapter.B);
        }
        model.Attach(adapters);
        model.Forward(b, t, HfFixture.Tokens);
        var before = backend.ToArray(model.Logits);

        using var folder = new TempDirectory();
        PeftAdapter.Save(adapters, folder.Path, "hf-gpt2-tiny");
        var config = JsonNode.Parse(File.ReadAllText(folder.File(PeftAdapter.ConfigFile)))!.AsObject();
        Assert.Equal("LORA", (string?)config["peft_type"]);
        Assert.Equal("CAUSAL_LM", (string?)config["task_type"]);
        Assert.Equal(3, (int?)config["r"]);
        Assert.Equal(5.0, (double?)config["lora_alpha"]);
        Assert.True((bool?)config["fan_in_fan_out"]);
        Assert.False((bool?)config["use_rslora"]);
        Assert.Equal("none", (string?)config["bias"]);
        Assert.Equal("hf-gpt2-tiny", (string?)config["base_model_name_or_path"]);
        Assert.Equal(["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"], config["target_modules"]!.AsArray().Select(n => (string)n!));

        using var reopened = PeftAdapter.Open(folder.Path, backend);
        Assert.Equal(adapters.Modules, reopened.Modules);
        Assert.Equal(backend.ToArray(adapters.Parameters), backend.ToArray(reopened.Parameters));
        model.Attach(reopened);
        model.Forward(b, t, HfFixture.Tokens);
        Assert.Equal(before, backend.ToArray(model.Logits));
    }

    [Fact]
    public void TargetModules_SomeBlocksOnly_NamesEachModule()
    {
        var modules = new[] { new LoraModuleSpec("transformer.h.0.attn.c_attn", 4, 12), new LoraModuleSpec("transformer.h.1.mlp.c_fc", 4, 16) };
        Assert.Equal(["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc"], PeftAdapter.TargetModules(modules));
    }

    [Theory]
    [InlineData("peft_type", "\"IA3\"", "peft_type")]
    [InlineData("bias", "\"all\"", "bias")]
    [InlineData("r", "0", "'r'")]
    [InlineData("r", "3", "expected (3,32)")]
    [InlineData("use_dora", "true", "DoRA")]
    public void Open_ConfigFedLoraCannotApply_IsRefused(string key, string json, string named)
    {
        using var folder = HfFixture.CopyOf(HfFixture.PeftFolder);
        var config = JsonNode.Parse(File.ReadAllText(folder.File(PeftAdapter.ConfigFile)))!.AsObject();
        config[key] = JsonNode.Parse(json);
        File.WriteAllText(folder.File(PeftAdapter.ConfigFile), config.ToJsonString());
        using var backend = HfFixture.Create("cpu");
        var e = Assert.Throws<InvalidDataException>(() => PeftAdapter.Open(folder.Path, backend));
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
    }
}
