using System.Globalization;
using System.Text.Json;
using FedLora.Federation;
using FedLora.Lora;
using FedLora.Lora.Safetensors;

namespace FedLora.Runtime;

/// <summary>
/// A <see cref="ClientAssignment"/> as one safetensors payload: its tensors are exactly
/// <see cref="ClientAssignment.Download"/>, its scalars travel in the header's metadata (floats as
/// their bit patterns, so the client trains at the server's scale bit for bit).
/// </summary>
public static class AssignmentCodec
{
    private const string Prefix = "fedlora.";

    /// <summary>The payload of <paramref name="assignment"/>.</summary>
    public static byte[] Encode(ClientAssignment assignment)
    {
        ArgumentNullException.ThrowIfNull(assignment);
        var writer = new SafetensorsWriter();
        foreach (var tensor in assignment.Download)
        {
            var shape = tensor.Shape.ToArray();
            if (tensor.Floats is { } floats) writer.AddFloats(tensor.Name, floats, shape);
            else writer.AddInt32s(tensor.Name, tensor.Integers!, shape);
        }
        var meta = writer.Metadata;
        meta[Prefix + "round"] = Text(assignment.Round);
        meta[Prefix + "client_id"] = Text(assignment.ClientId);
        meta[Prefix + "example_count"] = Text(assignment.Client.ExampleCount);
        if (assignment.Client.Budget.Rank is { } budgetRank) meta[Prefix + "budget_rank"] = Text(budgetRank);
        else meta[Prefix + "budget_ratio"] = assignment.Client.Budget.Ratio!.Value.ToString("R", CultureInfo.InvariantCulture);
        meta[Prefix + "rank"] = Text(assignment.Rank);
        meta[Prefix + "adapter_rank"] = Text(assignment.AdapterRank);
        meta[Prefix + "alpha_bits"] = Text(BitConverter.SingleToInt32Bits(assignment.Alpha));
        meta[Prefix + "scale_bits"] = Text(BitConverter.SingleToInt32Bits(assignment.Scale));
        meta[Prefix + "scaling"] = assignment.Scaling.ToString();
        meta[Prefix + "trainable"] = assignment.Trainable.ToString();
        meta[Prefix + "modules"] = JsonSerializer.Serialize(assignment.Modules.Select(m => new object[] { m.Name, m.InFeatures, m.OutFeatures }));
        if (assignment.Regularizer is { } regularizer)
        {
            meta[Prefix + "hetlora_lambda"] = regularizer.Lambda.ToString("R", CultureInfo.InvariantCulture);
            meta[Prefix + "hetlora_gamma"] = regularizer.Gamma.ToString("R", CultureInfo.InvariantCulture);
        }
        return writer.ToArray();
    }

    /// <summary>Reads an assignment back; throws <see cref="FormatException"/> or <see cref="SafetensorsFormatException"/> on a bad payload.</summary>
    public static ClientAssignment Decode(ReadOnlyMemory<byte> payload)
    {
        var file = SafetensorsFile.Parse(payload, "assignment");
        var meta = file.Metadata;
        string Get(string key) => meta.TryGetValue(Prefix + key, out var value) ? value : throw new FormatException($"the assignment has no '{Prefix}{key}' metadata");
        int Int(string key) => int.Parse(Get(key), NumberStyles.Integer, CultureInfo.InvariantCulture);
        double Double(string key) => double.Parse(Get(key), NumberStyles.Float, CultureInfo.InvariantCulture);

        var modules = JsonSerializer.Deserialize<JsonElement[][]>(Get("modules"))!
            .Select(m => new LoraModuleSpec(m[0].GetString()!, m[1].GetInt32(), m[2].GetInt32()))
            .ToArray();
        var budget = meta.ContainsKey(Prefix + "budget_rank") ? ClientBudget.OfRank(Int("budget_rank")) : ClientBudget.OfRatio(Double("budget_ratio"));
        var client = new SampledClient(Int("client_id"), Int("example_count"), budget);
        var rank = Int("rank");
        int? freshSeed = file.Contains("fresh_seed") ? file.ReadInt32s("fresh_seed").Single() : null;
        IReadOnlyList<HostAdapter> start;
        int[][]? indices = null;
        if (freshSeed is { } seed)
        {
            start = HostAdapter.Fresh(modules, rank, new Random(seed));
        }
        else
        {
            start = modules.Select(m => new HostAdapter(m, rank,
                ReadFloats(file, WireTensor.LoraA(m.Name), rank, m.InFeatures),
                ReadFloats(file, WireTensor.LoraB(m.Name), m.OutFeatures, rank))).ToArray();
            if (file.Contains(WireTensor.RankIndices(modules[0].Name)))
            {
                indices = modules.Select(m =>
                {
                    file.RequireShape(WireTensor.RankIndices(m.Name), rank);
                    return file.ReadInt32s(WireTensor.RankIndices(m.Name));
                }).ToArray();
            }
        }
        var regularizer = meta.ContainsKey(Prefix + "hetlora_lambda") ? new HetLoraRegularizer(Double("hetlora_lambda"), Double("hetlora_gamma")) : null;
        return new ClientAssignment(Int("round"), client, rank, Int("adapter_rank"),
            BitConverter.Int32BitsToSingle(Int("alpha_bits")), Enum.Parse<LoraScaling>(Get("scaling")),
            BitConverter.Int32BitsToSingle(Int("scale_bits")), start, Enum.Parse<TrainableFactors>(Get("trainable")),
            indices, freshSeed, regularizer);
    }

    private static float[] ReadFloats(SafetensorsFile file, string name, params int[] shape)
    {
        file.RequireShape(name, shape);
        return file.ReadFloats(name);
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);
}
