using System.Globalization;
using FedLora.Lora.Safetensors;

namespace FedLora.Model.Tests.Fixtures;

/// <summary>
/// The PyTorch GPT fixture (tests/pytorch/make_gpt_fixture.py) holds every tensor the GPT's test
/// compares against, with the documented names and shapes, and is internally consistent.
/// </summary>
public class GptFixtureTests
{
    private static readonly SafetensorsFile Fixture = SafetensorsFile.Load(RepoPaths.Fixture("gpt_lora_tiny.safetensors"));

    private static int Config(string key) => int.Parse(Fixture.Metadata[key], CultureInfo.InvariantCulture);

    private static readonly string[] LoraTargets = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"];

    /// <summary>Base parameter names and shapes, (out,in) for weights.</summary>
    private static List<(string Name, int[] Shape)> BaseTensors()
    {
        int v = Config("vocab_size"), maxT = Config("context_length"), c = Config("n_embd");
        var tensors = new List<(string, int[])> { ("transformer.wte.weight", [v, c]), ("transformer.wpe.weight", [maxT, c]) };
        for (var i = 0; i < Config("n_layer"); i++)
        {
            var p = $"transformer.h.{i}.";
            tensors.AddRange([
                (p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
                (p + "attn.c_attn.weight", [3 * c, c]), (p + "attn.c_attn.bias", [3 * c]),
                (p + "attn.c_proj.weight", [c, c]), (p + "attn.c_proj.bias", [c]),
                (p + "ln_2.weight", [c]), (p + "ln_2.bias", [c]),
                (p + "mlp.c_fc.weight", [4 * c, c]), (p + "mlp.c_fc.bias", [4 * c]),
                (p + "mlp.c_proj.weight", [c, 4 * c]), (p + "mlp.c_proj.bias", [c]),
            ]);
        }
        tensors.AddRange([("transformer.ln_f.weight", [c]), ("transformer.ln_f.bias", [c])]);
        return tensors;
    }

    /// <summary>LoRA names and shapes: A is (r,in), B is (out,r), on every target of every layer.</summary>
    private static List<(string Name, int[] Shape)> LoraTensors()
    {
        int c = Config("n_embd"), r = Config("lora_rank");
        var tensors = new List<(string, int[])>();
        for (var i = 0; i < Config("n_layer"); i++)
        {
            foreach (var target in LoraTargets)
            {
                var (outputs, inputs) = target switch
                {
                    "attn.c_attn" => (3 * c, c),
                    "attn.c_proj" => (c, c),
                    "mlp.c_fc" => (4 * c, c),
                    _ => (c, 4 * c),
                };
                tensors.Add(($"transformer.h.{i}.{target}.lora_A.weight", [r, inputs]));
                tensors.Add(($"transformer.h.{i}.{target}.lora_B.weight", [outputs, r]));
            }
        }
        return tensors;
    }

    [Fact]
    public void Fixture_Metadata_DescribesFormatAndConfig()
    {
        Assert.Equal("fedlora-gpt-fixture", Fixture.Metadata["format"]);
        Assert.Equal("1", Fixture.Metadata["version"]);
        Assert.Equal("out_in", Fixture.Metadata["layout"]);
        Assert.Equal(257, Config("vocab_size"));
        Assert.Equal(string.Join(',', LoraTargets), Fixture.Metadata["lora_targets"]);
        Assert.Equal(0, Config("n_embd") % Config("n_head"));
        Assert.True(new FileInfo(Fixture.Source).Length < 300 * 1024, "the fixture must stay small");
    }

    [Fact]
    public void Fixture_Tensors_HaveDocumentedNamesAndShapes()
    {
        int b = Config("batch_size"), t = Config("seq_len"), v = Config("vocab_size"), steps = Config("train_steps");
        var expected = new List<(string Name, int[] Shape, SafetensorsDType DType)>();
        var parameters = BaseTensors().Concat(LoraTensors()).ToList();
        expected.AddRange(parameters.Select(p => (p.Name, p.Shape, SafetensorsDType.F32)));
        expected.AddRange(parameters.Select(p => ("grad." + p.Name, p.Shape, SafetensorsDType.F32)));
        expected.AddRange(LoraTensors().Select(p => ("train." + p.Name, p.Shape, SafetensorsDType.F32)));
        expected.Add(("batch.tokens", [b, t], SafetensorsDType.I32));
        expected.Add(("batch.targets", [b, t], SafetensorsDType.I32));
        expected.Add(("out.logits", [b, t, v], SafetensorsDType.F32));
        expected.Add(("out.loss", [], SafetensorsDType.F32));
        expected.Add(("train.losses", [steps], SafetensorsDType.F32));

        foreach (var (name, shape, dtype) in expected)
        {
            Assert.Equal(dtype, Fixture.RequireShape(name, shape).DType);
        }
        Assert.Equal(expected.Select(e => e.Name).Order(StringComparer.Ordinal), Fixture.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Fixture_Batch_HoldsValidTokensAndIgnoredTargets()
    {
        var v = Config("vocab_size");
        var tokens = Fixture.ReadInt32s("batch.tokens");
        var targets = Fixture.ReadInt32s("batch.targets");
        Assert.All(tokens, token => Assert.InRange(token, 0, v - 1));
        Assert.All(targets, target => Assert.InRange(target, -1, v - 1));
        Assert.Contains(-1, targets);
        Assert.Contains(v - 1, tokens);
    }

    [Fact]
    public void Fixture_Loss_IsMeanCrossEntropyOfLogitsOverCountedTargets()
    {
        var v = Config("vocab_size");
        var logits = Fixture.ReadFloats("out.logits");
        var targets = Fixture.ReadInt32s("batch.targets");
        double sum = 0;
        var counted = 0;
        for (var i = 0; i < targets.Length; i++)
        {
            if (targets[i] == -1) continue;
            var row = logits.AsSpan(i * v, v);
            double max = double.NegativeInfinity;
            foreach (var z in row) max = Math.Max(max, z);
            double partition = 0;
            foreach (var z in row) partition += Math.Exp(z - max);
            sum += Math.Log(partition) + max - row[targets[i]];
            counted++;
        }
        var loss = Fixture.ReadFloats("out.loss")[0];
        Assert.Equal(sum / counted, loss, 1e-5);

        var losses = Fixture.ReadFloats("train.losses");
        Assert.Equal(loss, losses[0]);
        for (var step = 1; step < losses.Length; step++) Assert.True(losses[step] < losses[step - 1], $"LoRA step {step} did not lower the loss");
    }

    [Fact]
    public void Fixture_Gradients_AreNonZeroForEveryParameter()
    {
        foreach (var (name, _) in BaseTensors().Concat(LoraTensors()))
        {
            Assert.Contains(Fixture.ReadFloats("grad." + name), g => g != 0f);
        }
    }

    [Fact]
    public void Fixture_Training_ChangesEveryLoraWeight()
    {
        foreach (var (name, _) in LoraTensors())
        {
            Assert.NotEqual(Fixture.ReadFloats(name), Fixture.ReadFloats("train." + name));
        }
    }
}
