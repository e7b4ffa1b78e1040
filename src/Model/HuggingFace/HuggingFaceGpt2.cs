using System.Text.Json;
using FedLora.Kernels;
using FedLora.Lora.Safetensors;
using FedLora.Model.Tokenization;

namespace FedLora.Model.HuggingFace;

/// <summary>A model loaded from a Hugging Face folder, with its tokenizer.</summary>
/// <param name="Model">The GPT, holding the folder's weights.</param>
/// <param name="Tokenizer">The folder's tokenizer.</param>
/// <param name="Config">The folder's config.json.</param>
public sealed record PretrainedModel(Gpt Model, ITokenizer Tokenizer, Gpt2Config Config);

/// <summary>
/// Hugging Face <c>GPT2LMHeadModel</c> folders (gpt2, distilgpt2, gpt2-medium, ...): config.json, the
/// weights as model.safetensors or as shards listed by model.safetensors.index.json (F32, F16 or
/// BF16), and GPT-2's tokenizer files. HF's names are FedLora's (with or without the
/// <c>transformer.</c> prefix); Conv1D weights, stored (in,out), are transposed to FedLora's (out,in).
/// </summary>
/// <remarks>
/// Every tensor's presence, dtype and shape is checked before the model is allocated, so a bad
/// folder is refused with nothing built. Files are memory-mapped and copied one tensor at a time,
/// so the weights are never held twice in the process's memory.
/// </remarks>
public static class HuggingFaceGpt2
{
    private const string SingleFile = "model.safetensors", IndexFile = "model.safetensors.index.json";

    /// <summary>The tokenizer of the folder <paramref name="directory"/>, with the vocabulary size and end-of-text of its config.json.</summary>
    /// <exception cref="InvalidDataException">The config or the tokenizer files are missing or malformed.</exception>
    public static ITokenizer LoadTokenizer(string directory)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var config = Gpt2Config.Load(Path.Combine(directory, "config.json"));
        return Gpt2Tokenizer.FromFolder(directory, config.VocabSize, config.EosTokenId);
    }

    /// <summary>Whether <paramref name="path"/> is a folder with a config.json (a Hugging Face model folder).</summary>
    public static bool IsModelFolder(string path) => Directory.Exists(path) && File.Exists(Path.Combine(path, "config.json"));

    /// <summary>
    /// Loads the folder <paramref name="directory"/> onto <paramref name="backend"/> for batches of up
    /// to (maxBatch, min(maxTime, n_positions)).
    /// </summary>
    /// <exception cref="InvalidDataException">The folder is not a GPT-2 model FedLora can load; the message says what is wrong.</exception>
    public static PretrainedModel Load(string directory, Backend backend, int maxBatch, int maxTime, int? logitRows = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(backend);
        if (!Directory.Exists(directory)) throw new InvalidDataException($"{directory}: no such folder");
        var config = Gpt2Config.Load(Path.Combine(directory, "config.json"));
        var tokenizer = Gpt2Tokenizer.FromFolder(directory, config.VocabSize, config.EosTokenId);
        try
        {
            return Load(directory, backend, maxBatch, maxTime, logitRows, config, tokenizer);
        }
        catch (SafetensorsFormatException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }

    private static PretrainedModel Load(string directory, Backend backend, int maxBatch, int maxTime, int? logitRows, Gpt2Config config, ITokenizer tokenizer)
    {
        var files = OpenWeights(directory);
        try
        {
            var gptConfig = config.ToGptConfig();
            var layout = new GptParameters(gptConfig);
            var sources = Resolve(layout, files);
            var model = new Gpt(backend, gptConfig, maxBatch, Math.Min(maxTime, gptConfig.ContextLength), logitRows);
            try
            {
                Copy(layout, sources, model);
                return new PretrainedModel(model, tokenizer, config);
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }
        finally
        {
            foreach (var file in files.Values) file.Dispose();
        }
    }

    /// <summary>The weight files of the folder by file name: model.safetensors, or the shards its index names.</summary>
    private static Dictionary<string, MappedSafetensorsFile> OpenWeights(string directory)
    {
        var names = new List<string>();
        var single = Path.Combine(directory, SingleFile);
        var index = Path.Combine(directory, IndexFile);
        if (File.Exists(single))
        {
            names.Add(SingleFile);
        }
        else if (File.Exists(index))
        {
            names.AddRange(ShardNames(index));
        }
        else
        {
            throw new InvalidDataException($"{directory}: no weights: the folder needs {SingleFile}, or {IndexFile} and its shards (PyTorch .bin files are not read; save with safe_serialization=True)");
        }
        var files = new Dictionary<string, MappedSafetensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var name in names)
            {
                var path = Path.Combine(directory, name);
                if (!File.Exists(path)) throw new InvalidDataException($"{index}: shard '{name}' is missing from the folder");
                files[name] = MappedSafetensorsFile.Open(path);
            }
            return files;
        }
        catch
        {
            foreach (var file in files.Values) file.Dispose();
            throw;
        }
    }

    private static SortedSet<string> ShardNames(string index)
    {
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(index));
            if (!document.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{index}: no 'weight_map' object");
            }
            var names = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                var name = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : "";
                // A shard is a file of this folder: no path, so an index cannot point outside it.
                if (name.Length == 0 || Path.GetFileName(name) != name || name is "." or "..")
                {
                    throw new InvalidDataException($"{index}: tensor '{entry.Name}' maps to '{entry.Value.GetRawText()}', not a file name in the folder");
                }
                names.Add(name);
            }
            if (names.Count == 0) throw new InvalidDataException($"{index}: the weight_map is empty");
            return names;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{index}: not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Where each of the layout's tensors is, checked for presence, dtype and shape; unknown tensors are refused.</summary>
    private static Dictionary<string, (SafetensorsFile File, string Name)> Resolve(GptParameters layout, Dictionary<string, MappedSafetensorsFile> files)
    {
        var found = new Dictionary<string, (SafetensorsFile File, string Name)>(StringComparer.Ordinal);
        foreach (var mapped in files.Values)
        {
            var file = mapped.File;
            foreach (var info in file.Tensors)
            {
                var name = info.Name.StartsWith("transformer.", StringComparison.Ordinal) ? info.Name : "transformer." + info.Name;
                if (layout.Contains(name))
                {
                    if (!found.TryAdd(name, (file, info.Name))) throw new InvalidDataException($"{file.Source}: tensor '{info.Name}' appears twice in the folder's weights");
                    continue;
                }
                // HF's attention mask buffers and the tied head (which HF itself ignores when tied).
                if (name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)) continue;
                if (info.Name == "lm_head.weight")
                {
                    file.RequireShape(info.Name, layout.Config.VocabSize, layout.Config.Channels);
                    continue;
                }
                throw new InvalidDataException($"{file.Source}: tensor '{info.Name}' is not part of a {Gpt2Config.Gpt2Architecture} with this config");
            }
        }
        foreach (var tensor in layout.Tensors)
        {
            if (!found.TryGetValue(tensor.Name, out var source))
            {
                throw new InvalidDataException($"{string.Join(", ", files.Values.Select(f => f.File.Source))}: tensor '{tensor.Name}' is missing");
            }
            var info = source.File.GetInfo(source.Name);
            if (info.DType is not (SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F64)) throw new InvalidDataException($"{source.File.Source}: tensor '{source.Name}' has dtype {info.DType}; weights must be F32, F16 or BF16");
            // HF's Conv1D keeps a linear weight as (in,out); FedLora's layout is (out,in).
            if (tensor.IsConv1DWeight) source.File.RequireShape(source.Name, tensor.Shape[1], tensor.Shape[0]);
            else source.File.RequireShape(source.Name, tensor.Shape);
        }
        return found;
    }

    private static void Copy(GptParameters layout, Dictionary<string, (SafetensorsFile File, string Name)> sources, Gpt model)
    {
        float[] stored = [], transposed = [];
        foreach (var tensor in layout.Tensors)
        {
            var (file, name) = sources[tensor.Name];
            if (stored.Length < tensor.Length) stored = new float[tensor.Length];
            var values = stored.AsSpan(0, tensor.Length);
            file.ReadFloats(name, values);
            if (tensor.IsConv1DWeight)
            {
                if (transposed.Length < tensor.Length) transposed = new float[tensor.Length];
                var (inFeatures, outFeatures) = (tensor.Shape[1], tensor.Shape[0]);
                var result = transposed.AsSpan(0, tensor.Length);
                for (var i = 0; i < inFeatures; i++)
                {
                    for (var o = 0; o < outFeatures; o++) result[o * inFeatures + i] = values[i * outFeatures + o];
                }
                values = result;
            }
            model.Backend.Upload(values, layout.View(model.Parameters, tensor.Name));
        }
    }
}
