using System.Text.Json;

namespace FedLora.Model.HuggingFace;

/// <summary>
/// The keys of a Hugging Face <c>GPT2LMHeadModel</c>'s config.json that FedLora reads, under their
/// config.json names, and the checks that refuse a model FedLora would compute differently.
/// </summary>
/// <param name="Architecture">The first of <c>architectures</c> (or <c>model_type</c> when absent).</param>
/// <param name="VocabSize"><c>vocab_size</c>: V.</param>
/// <param name="NPositions"><c>n_positions</c>: the context length (rows of wpe).</param>
/// <param name="NEmbd"><c>n_embd</c>: C.</param>
/// <param name="NLayer"><c>n_layer</c>: L.</param>
/// <param name="NHead"><c>n_head</c>: NH.</param>
/// <param name="LayerNormEpsilon"><c>layer_norm_epsilon</c>; FedLora's LayerNorm uses 1e-5, as every GPT-2 does.</param>
/// <param name="EosTokenId"><c>eos_token_id</c>: the end-of-text token.</param>
public sealed record Gpt2Config(string Architecture, int VocabSize, int NPositions, int NEmbd, int NLayer, int NHead, double LayerNormEpsilon, int EosTokenId)
{
    /// <summary>The architecture FedLora loads.</summary>
    public const string Gpt2Architecture = "GPT2LMHeadModel";

    private const int MaxVocab = 1 << 20, MaxPositions = 1 << 16, MaxChannels = 1 << 14, MaxLayers = 1024;

    /// <summary>FedLora's shape for this model.</summary>
    public GptConfig ToGptConfig() => new(VocabSize, NPositions, NLayer, NEmbd, NHead);

    /// <summary>
    /// Reads and checks <paramref name="path"/>. An architecture other than GPT2LMHeadModel, a missing
    /// key, a value out of range or a variant FedLora does not compute (another activation, an inner
    /// width other than 4C, another LayerNorm epsilon, an untied head, scaled attention variants) is
    /// refused with an <see cref="InvalidDataException"/> naming the key.
    /// </summary>
    public static Gpt2Config Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new InvalidDataException($"{path}: no config.json; a Hugging Face model folder holds config.json and model.safetensors");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllBytes(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: config.json must be a JSON object");
            var architecture = ReadArchitecture(root, path);
            if (architecture != Gpt2Architecture)
            {
                throw new InvalidDataException($"{path}: architecture '{architecture}' is not supported; FedLora loads {Gpt2Architecture} (gpt2, distilgpt2, gpt2-medium and the like)");
            }
            var vocab = Int(root, path, "vocab_size", 1, MaxVocab);
            var positions = Int(root, path, "n_positions", 1, MaxPositions);
            var channels = Int(root, path, "n_embd", 1, MaxChannels);
            var layers = Int(root, path, "n_layer", 1, MaxLayers);
            var heads = Int(root, path, "n_head", 1, channels);
            if (channels % heads != 0) throw new InvalidDataException($"{path}: n_head {heads} does not divide n_embd {channels}");
            var epsilon = Number(root, path, "layer_norm_epsilon", 1e-5);
            if (Math.Abs(epsilon - 1e-5) > 1e-12) throw new InvalidDataException($"{path}: layer_norm_epsilon {epsilon} is not supported; FedLora's LayerNorm uses 1e-5 (GPT-2's)");
            var eos = root.TryGetProperty("eos_token_id", out _) ? Int(root, path, "eos_token_id", 0, vocab - 1) : vocab - 1;
            if (root.TryGetProperty("n_inner", out var inner) && inner.ValueKind != JsonValueKind.Null)
            {
                var width = Int(root, path, "n_inner", 1, int.MaxValue);
                if (width != 4 * channels) throw new InvalidDataException($"{path}: n_inner {width} is not supported; FedLora's MLP is 4 * n_embd = {4 * channels} wide");
            }
            var activation = Text(root, "activation_function") ?? "gelu_new";
            if (activation is not ("gelu_new" or "gelu_pytorch_tanh" or "gelu_fast"))
            {
                throw new InvalidDataException($"{path}: activation_function '{activation}' is not supported; FedLora computes the tanh GELU (gelu_new)");
            }
            Refuse(root, path, "tie_word_embeddings", expected: true, "FedLora's head is tied to the token embedding");
            Refuse(root, path, "scale_attn_weights", expected: true, "FedLora scales attention scores by 1/sqrt(head size)");
            Refuse(root, path, "scale_attn_by_inverse_layer_idx", expected: false, "FedLora does not scale attention by layer");
            return new Gpt2Config(architecture, vocab, positions, channels, layers, heads, epsilon, eos);
        }
    }

    private static string ReadArchitecture(JsonElement root, string path)
    {
        if (root.TryGetProperty("architectures", out var list) && list.ValueKind == JsonValueKind.Array && list.GetArrayLength() > 0)
        {
            return list[0].GetString() ?? throw new InvalidDataException($"{path}: architectures[0] is not a string");
        }
        var type = Text(root, "model_type") ?? throw new InvalidDataException($"{path}: neither 'architectures' nor 'model_type' says which model this is");
        return type == "gpt2" ? Gpt2Architecture : type;
    }

    private static int Int(JsonElement root, string path, string key, int min, int max)
    {
        if (!root.TryGetProperty(key, out var value)) throw new InvalidDataException($"{path}: '{key}' is missing");
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out var number)) throw new InvalidDataException($"{path}: '{key}' must be a whole number, got {value.GetRawText()}");
        if (number < min || number > max) throw new InvalidDataException($"{path}: '{key}' is {number}, outside [{min}, {max}]");
        return (int)number;
    }

    private static double Number(JsonElement root, string path, string key, double fallback)
    {
        if (!root.TryGetProperty(key, out var value)) return fallback;
        if (value.ValueKind != JsonValueKind.Number) throw new InvalidDataException($"{path}: '{key}' must be a number, got {value.GetRawText()}");
        return value.GetDouble();
    }

    private static string? Text(JsonElement root, string key) =>
        root.TryGetProperty(key, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static void Refuse(JsonElement root, string path, string key, bool expected, string why)
    {
        if (!root.TryGetProperty(key, out var value) || value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw new InvalidDataException($"{path}: '{key}' must be true or false");
        if (value.GetBoolean() != expected) throw new InvalidDataException($"{path}: '{key}' {value.GetBoolean().ToString().ToLowerInvariant()} is not supported: {why}");
    }
}
