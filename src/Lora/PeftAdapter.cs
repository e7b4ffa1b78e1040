using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using FedLora.Kernels;
using FedLora.Lora.Safetensors;

namespace FedLora.Lora;

/// <summary>
/// Adapters as peft folders, both ways: <c>adapter_config.json</c> (peft_type LORA, task_type
/// CAUSAL_LM, r, lora_alpha, target_modules in Hugging Face module names, fan_in_fan_out true for
/// GPT-2's Conv1D, bias "none", use_rslora, base_model_name_or_path, rank_pattern / alpha_pattern)
/// and <c>adapter_model.safetensors</c> with peft's tensor names
/// (<c>base_model.model.{module}.lora_A.weight</c> (r,in), <c>....lora_B.weight</c> (out,r)), which
/// <c>PeftModel.from_pretrained</c> loads.
/// </summary>
/// <remarks>
/// peft computes a Conv1D layer's adapter as x A^T B^T * s with the same A and B as FedLora (its
/// fan_in_fan_out only transposes the merged delta), so the tensors are exchanged as they are. A
/// folder whose modules differ in rank or alpha (rank_pattern, alpha_pattern) loads into one
/// <see cref="AdapterSet"/> of the largest rank: the smaller adapters are padded with zeros and their
/// B rescaled by s_module / s_set, which leaves every layer's s B A unchanged.
/// </remarks>
public static class PeftAdapter
{
    /// <summary>The folder's config file name.</summary>
    public const string ConfigFile = "adapter_config.json";

    /// <summary>The folder's weights file name.</summary>
    public const string WeightsFile = "adapter_model.safetensors";

    private const string Prefix = "base_model.model.";

    /// <summary>
    /// Writes <paramref name="adapters"/> as a peft folder <paramref name="directory"/> (created if
    /// needed; each file written atomically). <paramref name="baseModel"/> is recorded as
    /// base_model_name_or_path.
    /// </summary>
    public static void Save(AdapterSet adapters, string directory, string baseModel)
    {
        ArgumentNullException.ThrowIfNull(adapters);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentNullException.ThrowIfNull(baseModel);
        Directory.CreateDirectory(directory);
        AdapterFile.Save(adapters, Path.Combine(directory, WeightsFile));
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModel,
            ["r"] = adapters.Rank,
            ["lora_alpha"] = adapters.Alpha,
            ["use_rslora"] = adapters.Scaling == LoraScaling.RankStabilized,
            ["target_modules"] = new JsonArray([.. TargetModules(adapters.Modules).Select(m => (JsonNode)m!)]),
            ["fan_in_fan_out"] = true,
            ["bias"] = "none",
            ["lora_dropout"] = 0.0,
            ["rank_pattern"] = new JsonObject(),
            ["alpha_pattern"] = new JsonObject(),
            ["init_lora_weights"] = true,
            ["inference_mode"] = true,
            ["modules_to_save"] = null,
            ["layers_to_transform"] = null,
            ["layers_pattern"] = null,
            ["use_dora"] = false,
            ["revision"] = null,
        };
        var path = Path.Combine(directory, ConfigFile);
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>
    /// peft's target_modules for these modules: the module suffixes ("attn.c_attn", "mlp.c_proj", ...)
    /// when every block carries the same ones, else the full module names (peft matches a target by
    /// equality or as a dotted suffix).
    /// </summary>
    public static IReadOnlyList<string> TargetModules(IReadOnlyList<LoraModuleSpec> modules)
    {
        ArgumentNullException.ThrowIfNull(modules);
        var byBlock = modules.Select(m => SplitBlock(m.Name)).ToArray();
        var blocks = byBlock.Select(p => p.Block).Distinct(StringComparer.Ordinal).ToArray();
        var suffixes = byBlock.Select(p => p.Suffix).Distinct(StringComparer.Ordinal).ToArray();
        var uniform = byBlock.All(p => p.Block is not null) && blocks.Length * suffixes.Length == modules.Count;
        return uniform ? suffixes : [.. modules.Select(m => m.Name)];
    }

    private static (string? Block, string Suffix) SplitBlock(string name)
    {
        // "transformer.h.3.attn.c_attn" -> ("transformer.h.3", "attn.c_attn")
        var parts = name.Split('.');
        for (var i = 0; i + 1 < parts.Length; i++)
        {
            if (int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                return (string.Join('.', parts[..(i + 1)]), string.Join('.', parts[(i + 1)..]));
            }
        }
        return (null, name);
    }

    /// <summary>
    /// Loads the adapter at <paramref name="path"/>: a peft folder (peft's or FedLora's), or a FedLora
    /// adapter file (.safetensors with FedLora's metadata).
    /// </summary>
    /// <exception cref="InvalidDataException">Not an adapter folder FedLora can load; the message says why.</exception>
    /// <exception cref="SafetensorsFormatException">A FedLora adapter file is malformed.</exception>
    public static AdapterSet Open(string path, Backend backend)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(backend);
        if (File.Exists(path)) return AdapterFile.Open(SafetensorsFile.Load(path), backend);
        if (!Directory.Exists(path)) throw new InvalidDataException($"{path}: no such adapter folder or file");
        var configPath = Path.Combine(path, ConfigFile);
        var weightsPath = Path.Combine(path, WeightsFile);
        if (!File.Exists(configPath)) throw new InvalidDataException($"{path}: no {ConfigFile}; a peft adapter folder holds {ConfigFile} and {WeightsFile}");
        if (!File.Exists(weightsPath))
        {
            throw new InvalidDataException($"{path}: no {WeightsFile}" + (File.Exists(Path.Combine(path, "adapter_model.bin")) ? " (adapter_model.bin is not read: save with safe_serialization=True)" : ""));
        }
        var config = ReadConfig(configPath);
        try
        {
            return Build(config, SafetensorsFile.Load(weightsPath), backend);
        }
        catch (SafetensorsFormatException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
    }

    private sealed record Config(int Rank, float Alpha, LoraScaling Scaling, Dictionary<string, int> RankPattern, Dictionary<string, float> AlphaPattern, string Source);

    private static Config ReadConfig(string path)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
        if (root is not JsonObject config) throw new InvalidDataException($"{path}: must be a JSON object");
        string? Text(string key) => config[key] is JsonValue value && value.TryGetValue<string>(out var text) ? text : null;
        var type = Text("peft_type");
        if (type != "LORA") throw new InvalidDataException($"{path}: peft_type '{type}' is not LORA; FedLora loads LoRA adapters");
        var bias = Text("bias") ?? "none";
        if (bias != "none") throw new InvalidDataException($"{path}: bias '{bias}' is not supported; FedLora's adapters train no biases (bias \"none\")");
        if (config["use_dora"] is JsonValue dora && dora.TryGetValue<bool>(out var isDora) && isDora) throw new InvalidDataException($"{path}: use_dora true (DoRA) is not supported");
        var rank = Whole(config["r"], path, "r");
        var alpha = config["lora_alpha"] is null ? 8f : Real(config["lora_alpha"], path, "lora_alpha");
        var rs = config["use_rslora"] is JsonValue rsValue && rsValue.TryGetValue<bool>(out var isRs) && isRs;
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        if (config["rank_pattern"] is JsonObject rankPattern)
        {
            foreach (var (key, value) in rankPattern) ranks[key] = Whole(value, path, $"rank_pattern.{key}");
        }
        var alphas = new Dictionary<string, float>(StringComparer.Ordinal);
        if (config["alpha_pattern"] is JsonObject alphaPattern)
        {
            foreach (var (key, value) in alphaPattern) alphas[key] = Real(value, path, $"alpha_pattern.{key}");
        }
        return new Config(rank, alpha, rs ? LoraScaling.RankStabilized : LoraScaling.Standard, ranks, alphas, path);
    }

    private static int Whole(JsonNode? node, string path, string key)
    {
        if (node is JsonValue value && value.TryGetValue<int>(out var number) && number >= 1) return number;
        throw new InvalidDataException($"{path}: '{key}' must be a whole number >= 1, got {node?.ToJsonString() ?? "nothing"}");
    }

    private static float Real(JsonNode? node, string path, string key)
    {
        if (node is JsonValue value && value.TryGetValue<double>(out var number) && double.IsFinite(number)) return (float)number;
        throw new InvalidDataException($"{path}: '{key}' must be a number, got {node?.ToJsonString() ?? "nothing"}");
    }

    /// <summary>peft's pattern lookup: the key equal to the module name or its dotted suffix.</summary>
    private static bool TryPattern<T>(Dictionary<string, T> pattern, string module, out T value)
    {
        foreach (var (key, found) in pattern)
        {
            if (module == key || module.EndsWith("." + key, StringComparison.Ordinal))
            {
                value = found;
                return true;
            }
        }
        value = default!;
        return false;
    }

    private static AdapterSet Build(Config config, SafetensorsFile file, Backend backend)
    {
        const string A = ".lora_A.weight", B = ".lora_B.weight";
        var modules = new List<(LoraModuleSpec Spec, string A, string B, int Rank, float Scale)>();
        foreach (var info in file.Tensors)
        {
            if (info.Name.EndsWith(B, StringComparison.Ordinal)) continue;
            if (!info.Name.EndsWith(A, StringComparison.Ordinal))
            {
                throw new InvalidDataException($"{file.Source}: tensor '{info.Name}' is not a LoRA A or B weight (modules_to_save and biases are not supported)");
            }
            var key = info.Name[..^A.Length];
            var module = key.StartsWith(Prefix, StringComparison.Ordinal) ? key[Prefix.Length..] : key;
            var bName = key + B;
            if (!file.Contains(bName)) throw new InvalidDataException($"{file.Source}: '{info.Name}' has no '{bName}'");
            var b = file.GetInfo(bName);
            if (info.Shape.Count != 2 || b.Shape.Count != 2) throw new InvalidDataException($"{file.Source}: the adapter of {module} is not two matrices");
            var rank = TryPattern(config.RankPattern, module, out var patternRank) ? patternRank : config.Rank;
            var alpha = TryPattern(config.AlphaPattern, module, out var patternAlpha) ? patternAlpha : config.Alpha;
            file.RequireShape(info.Name, rank, info.Shape[1]);
            file.RequireShape(bName, b.Shape[0], rank);
            modules.Add((new LoraModuleSpec(module, info.Shape[1], b.Shape[0]), info.Name, bName, rank, LoraScale.Of(alpha, rank, config.Scaling)));
        }
        foreach (var info in file.Tensors)
        {
            if (info.Name.EndsWith(B, StringComparison.Ordinal) && !file.Contains(info.Name[..^B.Length] + A))
            {
                throw new InvalidDataException($"{file.Source}: '{info.Name}' has no lora_A weight");
            }
        }
        if (modules.Count == 0) throw new InvalidDataException($"{file.Source}: no LoRA weights");
        var setRank = modules.Max(m => m.Rank);
        // The set's alpha keeps the config's scale for modules at the set's rank (the usual, uniform case).
        var setAlpha = setRank == config.Rank ? config.Alpha : config.Alpha * (config.Scaling == LoraScaling.Standard ? setRank / (float)config.Rank : MathF.Sqrt(setRank / (float)config.Rank));
        var adapters = new AdapterSet(backend, [.. modules.Select(m => m.Spec)], setRank, setAlpha, config.Scaling);
        try
        {
            for (var m = 0; m < modules.Count; m++)
            {
                var (spec, aName, bName, rank, scale) = modules[m];
                var a = new float[setRank * spec.InFeatures];
                var bPadded = new float[spec.OutFeatures * setRank];
                file.ReadFloats(aName, a.AsSpan(0, rank * spec.InFeatures));
                var b = file.ReadFloats(bName);
                var factor = scale / adapters.Scale;
                for (var o = 0; o < spec.OutFeatures; o++)
                {
                    for (var j = 0; j < rank; j++) bPadded[o * setRank + j] = b[o * rank + j] * factor;
                }
                backend.Upload(a, adapters.Adapters[m].A);
                backend.Upload(bPadded, adapters.Adapters[m].B);
            }
            return adapters;
        }
        catch
        {
            adapters.Dispose();
            throw;
        }
    }
}
