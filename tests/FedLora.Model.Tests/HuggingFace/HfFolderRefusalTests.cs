using System.Text.Json.Nodes;
using FedLora.Kernels.Cpu;
using FedLora.Lora.Safetensors;
using FedLora.Model.HuggingFace;

namespace FedLora.Model.Tests.HuggingFace;

/// <summary>Every folder FedLora cannot load is refused before a model is built, with a message naming what is wrong.</summary>
public sealed class HfFolderRefusalTests
{
    private static InvalidDataException Refused(string folder)
    {
        using var backend = new CpuBackend();
        return Assert.Throws<InvalidDataException>(() => HuggingFaceGpt2.Load(folder, backend, 1, 8));
    }

    private static TempDirectory WithConfig(Action<JsonObject> change)
    {
        var copy = HfFixture.CopyOf(HfFixture.Folder);
        var config = JsonNode.Parse(File.ReadAllText(copy.File("config.json")))!.AsObject();
        change(config);
        File.WriteAllText(copy.File("config.json"), config.ToJsonString());
        return copy;
    }

    /// <summary>The tiny folder with its weights rewritten by <paramref name="change"/> (name, values, shape) -> kept entries.</summary>
    private static TempDirectory WithTensors(Func<string, float[], int[], IEnumerable<(string Name, float[] Values, int[] Shape)>> change)
    {
        var copy = HfFixture.CopyOf(HfFixture.Folder);
        var source = SafetensorsFile.Load(Path.Combine(HfFixture.Folder, "model.safetensors"));
        var writer = new SafetensorsWriter();
        foreach (var info in source.Tensors)
        {
            foreach (var (name, values, shape) in change(info.Name, source.ReadFloats(info.Name), [.. info.Shape])) writer.AddFloats(name, values, shape);
        }
        writer.Save(copy.File("model.safetensors"));
        return copy;
    }

    [Theory]
    [InlineData("architectures", "[\"LlamaForCausalLM\"]", "LlamaForCausalLM")]
    [InlineData("n_head", "5", "n_head")]
    [InlineData("vocab_size", "0", "vocab_size")]
    [InlineData("n_layer", "-2", "n_layer")]
    [InlineData("n_embd", "\"32\"", "n_embd")]
    [InlineData("layer_norm_epsilon", "1e-6", "layer_norm_epsilon")]
    [InlineData("activation_function", "\"relu\"", "activation_function")]
    [InlineData("n_inner", "64", "n_inner")]
    [InlineData("eos_token_id", "317", "eos_token_id")]
    [InlineData("tie_word_embeddings", "false", "tie_word_embeddings")]
    [InlineData("scale_attn_by_inverse_layer_idx", "true", "scale_attn_by_inverse_layer_idx")]
    public void Load_ConfigOutOfRange_IsRefusedNamingTheKey(string key, string json, string named)
    {
        using var folder = WithConfig(config => config[key] = JsonNode.Parse(json));
        Assert.Contains(named, Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingConfigKey_IsRefusedNamingIt()
    {
        using var folder = WithConfig(config => config.Remove("n_positions"));
        Assert.Contains("'n_positions' is missing", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingTensor_IsRefusedNamingIt()
    {
        using var folder = WithTensors((name, values, shape) => name == "transformer.h.1.mlp.c_fc.bias" ? [] : [(name, values, shape)]);
        Assert.Contains("'transformer.h.1.mlp.c_fc.bias' is missing", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_LinearStoredOutIn_IsRefusedAsMisshapen()
    {
        // HF's Conv1D weight is (in, out) = (32, 96); a (96, 32) one is a checkpoint of another layout.
        using var folder = WithTensors((name, values, shape) => [(name, values, name == "transformer.h.0.attn.c_attn.weight" ? [shape[1], shape[0]] : shape)]);
        var message = Refused(folder.Path).Message;
        Assert.Contains("transformer.h.0.attn.c_attn.weight", message, StringComparison.Ordinal);
        Assert.Contains("expected (32,96)", message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_UnknownTensor_IsRefusedNamingIt()
    {
        using var folder = WithTensors((name, values, shape) => name == "transformer.ln_f.bias" ? [(name, values, shape), ("transformer.h.0.attn.rotary.weight", values, shape)] : [(name, values, shape)]);
        Assert.Contains("'transformer.h.0.attn.rotary.weight' is not part of", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_ShardIndexPointingOutsideTheFolder_IsRefused()
    {
        using var folder = HfFixture.CopyOf(HfFixture.ShardedBf16Folder);
        var index = folder.File("model.safetensors.index.json");
        File.WriteAllText(index, File.ReadAllText(index).Replace("\"model-00002-of-00003.safetensors\"", "\"../model-00002-of-00003.safetensors\"", StringComparison.Ordinal));
        Assert.Contains("not a file name in the folder", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingShard_IsRefusedNamingIt()
    {
        using var folder = HfFixture.CopyOf(HfFixture.ShardedBf16Folder);
        File.Delete(folder.File("model-00003-of-00003.safetensors"));
        Assert.Contains("shard 'model-00003-of-00003.safetensors' is missing", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_NoWeights_IsRefused()
    {
        using var folder = HfFixture.CopyOf(HfFixture.Folder);
        File.Delete(folder.File("model.safetensors"));
        Assert.Contains("no weights", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_NoTokenizer_IsRefused()
    {
        using var folder = HfFixture.CopyOf(HfFixture.Folder);
        File.Delete(folder.File("merges.txt"));
        Assert.Contains("no tokenizer", Refused(folder.Path).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_TokenizerLargerThanTheModel_IsRefused()
    {
        using var folder = WithConfig(config =>
        {
            config["vocab_size"] = 300;
            config["eos_token_id"] = 299;
        });
        Assert.Contains("outside the model's vocabulary of 300", Refused(folder.Path).Message, StringComparison.Ordinal);
    }
}
