using System.CommandLine;
using System.Globalization;
using FedLora.Kernels;
using FedLora.Lora;
using FedLora.Model;
using FedLora.Model.HuggingFace;
using FedLora.Model.Tokenization;

namespace FedLora.Cli;

/// <summary>Options every computing verb takes, and the parsing helpers they share.</summary>
internal static class CommonOptions
{
    public static Option<string> Device() => new("--device")
    {
        Description = "Where to compute: cpu (managed SIMD, the default), reference (naive scalar; for checking), ilgpu-cpu (ILGPU's CPU accelerator; for checking), cuda or cuda:N, opencl or opencl:N (ILGPU; see `fedlora devices`)",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<int> Seed() => new("--seed")
    {
        Description = "Seeds every random choice (initialisation, data order, client sampling, sketches): same seed, same numbers",
        DefaultValueFactory = _ => 1234,
    };

    public static Option<string> Data() => new("--data")
    {
        Description = "The data: a folder with one task file per client (*.json or *.jsonl: Dolly, Alpaca, closed-choice or classification records) or one pooled file; default: the shipped data/dolly15k-fedit-10",
        DefaultValueFactory = _ => InstructionData.DefaultFolder,
    };

    public static Option<string?> Test() => new("--test")
    {
        Description = "The test file (task records); default: the --data folder's global_test.json, else --test-fraction of every client held out",
    };

    public static Option<double> TestFraction() => new("--test-fraction")
    {
        Description = "The share of every client's records held out as the test set when there is no test file",
        DefaultValueFactory = _ => 0.1,
    };

    public static Option<string?> Labels() => new("--labels")
    {
        Description = "The declared label set of classification records (text, label), comma-separated, e.g. negative,positive",
    };

    public static Option<int> EvalEvery(string unit)
    {
        var option = new Option<int>("--eval-every")
        {
            Description = $"Task metrics (accuracy on closed-choice records; exact match and ROUGE-L on free-form ones) every this many {unit}, and at the start and the end; 0: off",
            DefaultValueFactory = _ => 0,
        };
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() < 0) result.AddError($"--eval-every must be >= 0 (0: off), got {result.GetValueOrDefault<int>()}");
        });
        return option;
    }

    public static Option<int> EvalTokens() => Positive("--eval-max-tokens", "The longest greedy answer generated for a free-form test record", 64);

    /// <summary>The data options as one request.</summary>
    public static DataRequest ReadData(ParseResult parse, Option<string> data, Option<string?> test, Option<double> testFraction, Option<string?> labels,
        Option<string> partition, Option<int> clients, Option<int> context, Option<int> seed) =>
        new(parse.GetValue(data)!, parse.GetValue(test), parse.GetValue(testFraction), parse.GetValue(labels), parse.GetValue(partition)!,
            parse.GetValue(clients), parse.GetValue(context), parse.GetValue(seed));

    public static Option<string> BaseModel() => new("--model")
    {
        Description = "The base model: a FedLora checkpoint (.safetensors), or a Hugging Face GPT-2 folder (config.json, model.safetensors or shards, vocab.json + merges.txt or tokenizer.json); default: the shipped models/base.safetensors",
        DefaultValueFactory = _ => Paths.DefaultBaseModel,
    };

    /// <summary>The tokenizer of a --model: a Hugging Face folder's own, else the shipped model's byte-level one.</summary>
    public static ITokenizer LoadTokenizer(string path)
    {
        if (!HuggingFaceGpt2.IsModelFolder(path))
        {
            if (Directory.Exists(path)) throw new UsageException($"--model {path}: the folder has no config.json; a Hugging Face model folder holds config.json, model.safetensors and the tokenizer files");
            return ByteTokenizer.Instance;
        }
        try
        {
            return HuggingFaceGpt2.LoadTokenizer(path);
        }
        catch (InvalidDataException e)
        {
            throw new UsageException($"--model {path}: {e.Message}");
        }
    }

    public static Option<T> Positive<T>(string name, string description, T defaultValue) where T : struct, IComparable<T>
    {
        var option = new Option<T>(name) { Description = description, DefaultValueFactory = _ => defaultValue };
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (value.CompareTo(default) <= 0) result.AddError($"{name} must be > 0, got {value}");
        });
        return option;
    }

    public static Backend CreateBackend(string spec)
    {
        try
        {
            return Backends.Create(spec);
        }
        catch (Exception e) when (e is ArgumentException or Kernels.Ilgpu.IlgpuDeviceException)
        {
            throw new UsageException($"--device {spec}: {e.Message}");
        }
    }

    /// <summary>
    /// Loads a --model (a FedLora checkpoint or a Hugging Face GPT-2 folder) for batches of (batch,
    /// context); with <paramref name="upToModelContext"/>, a context beyond the model's is cut to it.
    /// </summary>
    public static Gpt LoadModel(string path, Backend backend, int batch, int context, bool upToModelContext = false)
    {
        Gpt model;
        if (HuggingFaceGpt2.IsModelFolder(path))
        {
            try
            {
                model = HuggingFaceGpt2.Load(path, backend, batch, context).Model;
            }
            catch (InvalidDataException e)
            {
                throw new UsageException($"--model {path}: {e.Message}");
            }
        }
        else
        {
            LoadTokenizer(path);
            Paths.RequireFile(path, "base model", "Pass --model PATH (a FedLora checkpoint or a Hugging Face GPT-2 folder), or build one with `fedlora pretrain` (README shows the command that made the shipped one).");
            model = GptCheckpoint.Load(path, backend, batch, context);
        }
        if (context > model.Config.ContextLength && !upToModelContext)
        {
            model.Dispose();
            throw new UsageException($"--context {context} exceeds the model's context length {model.Config.ContextLength}");
        }
        return model;
    }

    /// <summary>Opens a --adapter: a peft adapter folder (peft's or FedLora's) or a FedLora adapter file.</summary>
    public static AdapterSet LoadAdapter(string path, Backend backend)
    {
        try
        {
            return PeftAdapter.Open(path, backend);
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw new UsageException($"--adapter {path}: {e.Message}");
        }
    }

    /// <summary>Parses "64,32,16" into whole numbers.</summary>
    public static int[] ParseInts(string text, string option)
    {
        try
        {
            return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(part => int.Parse(part, NumberStyles.Integer, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            throw new UsageException($"{option} '{text}' must be comma-separated whole numbers, e.g. 64,32,16");
        }
    }

    /// <summary>Parses "1,0.5,0.25" into numbers.</summary>
    public static double[] ParseDoubles(string text, string option)
    {
        try
        {
            return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(part => double.Parse(part, NumberStyles.Float, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            throw new UsageException($"{option} '{text}' must be comma-separated numbers, e.g. 1,0.5,0.25");
        }
    }

    public static LoraTargets ParseTargets(string text)
    {
        var targets = LoraTargets.None;
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            targets |= part.ToLowerInvariant() switch
            {
                "all" => LoraTargets.All,
                "qkv" => LoraTargets.AttentionQkv,
                "attn-proj" => LoraTargets.AttentionProjection,
                "mlp-up" => LoraTargets.MlpUp,
                "mlp-down" => LoraTargets.MlpDown,
                _ => throw new UsageException($"--targets: unknown layer '{part}'; use all or a list of qkv, attn-proj, mlp-up, mlp-down"),
            };
        }
        if (targets == LoraTargets.None) throw new UsageException("--targets names no layer; use all or a list of qkv, attn-proj, mlp-up, mlp-down");
        return targets;
    }

    public static string Megabytes(long bytes) => (bytes / 1e6).ToString("0.00", CultureInfo.InvariantCulture);

    public static string Number(double value, string format = "0.0000") =>
        double.IsNaN(value) ? "-" : value.ToString(format, CultureInfo.InvariantCulture);
}
