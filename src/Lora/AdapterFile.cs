using System.Globalization;
using FedLora.Lora.Safetensors;

namespace FedLora.Lora;

/// <summary>
/// Adapters on disk, as peft writes them (adapter_model.safetensors): tensors
/// <c>base_model.model.{module}.lora_A.weight</c> (r,C) and <c>...lora_B.weight</c> (O,r), with the
/// rank, alpha and scaling in the metadata. Names without the <c>base_model.model.</c> prefix are
/// accepted on reading.
/// </summary>
public static class AdapterFile
{
    private const string Prefix = "base_model.model.";

    /// <summary>Writes every adapter of <paramref name="adapters"/> into a safetensors writer.</summary>
    public static SafetensorsWriter ToWriter(AdapterSet adapters)
    {
        ArgumentNullException.ThrowIfNull(adapters);
        var writer = new SafetensorsWriter();
        writer.Metadata["format"] = "fedlora-adapter";
        writer.Metadata["version"] = "1";
        writer.Metadata["rank"] = adapters.Rank.ToString(CultureInfo.InvariantCulture);
        writer.Metadata["alpha"] = adapters.Alpha.ToString("R", CultureInfo.InvariantCulture);
        writer.Metadata["scaling"] = adapters.Scaling.ToString();
        writer.Metadata["modules"] = string.Join(',', adapters.Modules.Select(m => m.Name));
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var adapter = adapters.Adapters[m];
            var name = Prefix + adapters.Modules[m].Name;
            writer.AddFloats(name + ".lora_A.weight", adapters.Backend.ToArray(adapter.A), adapter.Rank, adapter.InFeatures);
            writer.AddFloats(name + ".lora_B.weight", adapters.Backend.ToArray(adapter.B), adapter.OutFeatures, adapter.Rank);
        }
        return writer;
    }

    /// <summary>Saves the adapters atomically to <paramref name="path"/>.</summary>
    public static void Save(AdapterSet adapters, string path) => ToWriter(adapters).Save(path);

    /// <summary>
    /// Loads the values of every module of <paramref name="adapters"/> from <paramref name="file"/>;
    /// throws, leaving <paramref name="adapters"/> untouched, when a tensor is missing or misshapen or
    /// the file's rank, alpha or scaling differ.
    /// </summary>
    public static void Load(SafetensorsFile file, AdapterSet adapters)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(adapters);
        CheckHeader(file, adapters);
        var values = new (float[] A, float[] B)[adapters.Modules.Count];
        for (var m = 0; m < adapters.Modules.Count; m++)
        {
            var adapter = adapters.Adapters[m];
            var a = Find(file, adapters.Modules[m].Name + ".lora_A.weight");
            var b = Find(file, adapters.Modules[m].Name + ".lora_B.weight");
            file.RequireShape(a, adapter.Rank, adapter.InFeatures);
            file.RequireShape(b, adapter.OutFeatures, adapter.Rank);
            values[m] = (file.ReadFloats(a), file.ReadFloats(b));
        }
        for (var m = 0; m < values.Length; m++)
        {
            adapters.Backend.Upload(values[m].A, adapters.Adapters[m].A);
            adapters.Backend.Upload(values[m].B, adapters.Adapters[m].B);
        }
    }

    /// <summary>
    /// Creates an <see cref="AdapterSet"/> on <paramref name="backend"/> shaped as the file describes
    /// (rank, alpha and scaling from its metadata, modules from its tensors) and loads it.
    /// </summary>
    public static AdapterSet Open(SafetensorsFile file, Kernels.Backend backend)
    {
        ArgumentNullException.ThrowIfNull(file);
        string Meta(string key) => file.Metadata.TryGetValue(key, out var value)
            ? value
            : throw new InvalidDataException($"{file.Source}: the metadata has no '{key}'; is this a FedLora adapter file?");
        if (!int.TryParse(Meta("rank"), NumberStyles.None, CultureInfo.InvariantCulture, out var rank) || rank < 1)
        {
            throw new InvalidDataException($"{file.Source}: rank '{Meta("rank")}' is not a whole number >= 1");
        }
        if (!float.TryParse(Meta("alpha"), NumberStyles.Float, CultureInfo.InvariantCulture, out var alpha) || !float.IsFinite(alpha))
        {
            throw new InvalidDataException($"{file.Source}: alpha '{Meta("alpha")}' is not a number");
        }
        if (!Enum.TryParse<LoraScaling>(Meta("scaling"), out var scaling))
        {
            throw new InvalidDataException($"{file.Source}: scaling '{Meta("scaling")}' is not one of {string.Join(", ", Enum.GetNames<LoraScaling>())}");
        }
        var modules = Meta("modules").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(name =>
        {
            var a = file.GetInfo(Find(file, name + ".lora_A.weight"));
            var b = file.GetInfo(Find(file, name + ".lora_B.weight"));
            if (a.Shape.Count != 2 || b.Shape.Count != 2) throw new InvalidDataException($"{file.Source}: the adapter of {name} is not two matrices");
            return new LoraModuleSpec(name, a.Shape[1], b.Shape[0]);
        }).ToArray();
        var adapters = new AdapterSet(backend, modules, rank, alpha, scaling);
        try
        {
            Load(file, adapters);
            return adapters;
        }
        catch
        {
            adapters.Dispose();
            throw;
        }
    }

    private static void CheckHeader(SafetensorsFile file, AdapterSet adapters)
    {
        if (file.Metadata.TryGetValue("rank", out var rank) && rank != adapters.Rank.ToString(CultureInfo.InvariantCulture))
        {
            throw new InvalidDataException($"{file.Source}: the adapters have rank {rank}, expected {adapters.Rank}");
        }
        if (file.Metadata.TryGetValue("alpha", out var alphaText)
            && (!float.TryParse(alphaText, NumberStyles.Float, CultureInfo.InvariantCulture, out var alpha) || alpha != adapters.Alpha))
        {
            throw new InvalidDataException($"{file.Source}: the adapters were trained with alpha {alphaText}, expected {adapters.Alpha.ToString(CultureInfo.InvariantCulture)}");
        }
        if (file.Metadata.TryGetValue("scaling", out var scaling) && scaling != adapters.Scaling.ToString())
        {
            throw new InvalidDataException($"{file.Source}: the adapters use {scaling} scaling, expected {adapters.Scaling}");
        }
    }

    private static string Find(SafetensorsFile file, string name)
    {
        if (file.Contains(Prefix + name)) return Prefix + name;
        if (file.Contains(name)) return name;
        throw new InvalidDataException($"{file.Source}: no tensor '{Prefix + name}' (nor '{name}')");
    }
}
