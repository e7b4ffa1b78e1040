using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using FedLora.Federation;
using FedLora.Lora;
using FedLora.Lora.Safetensors;
using FedLora.Model;

namespace FedLora.Runtime;

/// <summary>
/// The base weights on the wire. FLoRA merges a stacked update into every client's base after each round;
/// a client catches up either with the updates it missed (<see cref="EncodeUpdates"/>: one payload holding
/// each version's stacked factors, a few MB) or with the whole base (<see cref="EncodeFull"/>), whichever is
/// smaller. Every other method never changes the base, so its clients download none of it.
/// </summary>
public static class BasePayload
{
    /// <summary>The header metadata key naming what a base payload holds: "full" or "updates".</summary>
    public const string KindKey = "fedlora.base_kind";

    /// <summary>The header metadata key of the base version a payload brings its reader to.</summary>
    public const string VersionKey = "fedlora.base_version";
    private const string FromKey = "fedlora.base_from";
    private const string ModulesKey = "fedlora.modules";
    private const string Parameters = "parameters";

    /// <summary>The whole base of <paramref name="model"/> at <paramref name="version"/>.</summary>
    public static byte[] EncodeFull(Gpt model, int version)
    {
        ArgumentNullException.ThrowIfNull(model);
        var writer = new SafetensorsWriter();
        writer.AddFloats(Parameters, model.Backend.ToArray(model.Parameters), model.Layout.Length);
        writer.Metadata[KindKey] = "full";
        writer.Metadata[VersionKey] = Text(version);
        return writer.ToArray();
    }

    /// <summary>The size of <see cref="EncodeFull"/>'s payload, without building it.</summary>
    public static long FullLength(Gpt model, int version)
    {
        ArgumentNullException.ThrowIfNull(model);
        var metadata = new Dictionary<string, string> { [KindKey] = "full", [VersionKey] = Text(version) };
        return SafetensorsWriter.FileLength(metadata, [(Parameters, SafetensorsDType.F32, [model.Layout.Length])]);
    }

    /// <summary>
    /// The stacked updates of versions <paramref name="from"/>+1 .. <paramref name="from"/>+<paramref name="updates"/>.Count
    /// (updates[i] brings the base from version from+i to from+i+1), to merge in order.
    /// </summary>
    public static byte[] EncodeUpdates(int from, IReadOnlyList<IReadOnlyList<StackedUpdate>> updates)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(from);
        ArgumentNullException.ThrowIfNull(updates);
        var writer = new SafetensorsWriter();
        for (var i = 0; i < updates.Count; i++)
        {
            var modules = new List<object[]>();
            foreach (var update in updates[i])
            {
                var prefix = $"v{from + i + 1}.{update.Module.Name}";
                writer.AddFloats(prefix + ".stacked_B", update.B, update.Module.OutFeatures, update.Rank);
                writer.AddFloats(prefix + ".stacked_A", update.A, update.Rank, update.Module.InFeatures);
                writer.AddFloats(prefix + ".stacked_weights", update.RowWeights, update.Rank);
                modules.Add([update.Module.Name, update.Module.InFeatures, update.Module.OutFeatures, update.Rank]);
            }
            writer.Metadata[$"{ModulesKey}.v{from + i + 1}"] = JsonSerializer.Serialize(modules);
        }
        writer.Metadata[KindKey] = "updates";
        writer.Metadata[FromKey] = Text(from);
        writer.Metadata[VersionKey] = Text(from + updates.Count);
        return writer.ToArray();
    }

    /// <summary>
    /// Brings <paramref name="model"/>'s base from <paramref name="haveVersion"/> (-1: unknown) to the payload's version
    /// and returns that version: a full payload replaces the weights, an updates payload (which must start at
    /// <paramref name="haveVersion"/>) is merged version by version. A malformed payload throws
    /// <see cref="FormatException"/> or <see cref="SafetensorsFormatException"/> before the model is touched.
    /// </summary>
    public static int Apply(ReadOnlyMemory<byte> payload, Gpt model, int haveVersion)
    {
        ArgumentNullException.ThrowIfNull(model);
        var file = SafetensorsFile.Parse(payload, "base payload");
        if (Kind(file) == "full")
        {
            file.RequireShape(Parameters, model.Layout.Length);
            model.Backend.Upload(file.ReadFloats(Parameters), model.Parameters);
            return Int(file, VersionKey);
        }
        var (from, updates) = DecodeUpdates(file);
        if (from != haveVersion) throw new FormatException($"the base updates start at version {from}, but this model holds version {haveVersion}");
        foreach (var spec in updates.SelectMany(u => u).Select(u => u.Module))
        {
            var name = spec.Name + ".weight";
            if (!model.Layout.Contains(name) || model.Layout[name].Length != (long)spec.InFeatures * spec.OutFeatures)
            {
                throw new FormatException($"a base update is for a {spec.InFeatures}x{spec.OutFeatures} module {spec.Name}, which this model does not have");
            }
        }
        foreach (var update in updates) GlobalModel.MergeIntoBase(model, update);
        return from + updates.Count;
    }

    /// <summary>The base updates an <see cref="EncodeUpdates"/> payload holds, with the version they start from.</summary>
    public static (int From, IReadOnlyList<IReadOnlyList<StackedUpdate>> Updates) DecodeUpdates(ReadOnlyMemory<byte> payload) =>
        DecodeUpdates(SafetensorsFile.Parse(payload, "base updates"));

    private static (int From, IReadOnlyList<IReadOnlyList<StackedUpdate>> Updates) DecodeUpdates(SafetensorsFile file)
    {
        if (Kind(file) != "updates") throw new FormatException("the payload holds the whole base, not base updates");
        var (from, version) = (Int(file, FromKey), Int(file, VersionKey));
        if (from < 0 || version < from) throw new FormatException($"the base updates go from version {from} to {version}");
        var updates = new List<IReadOnlyList<StackedUpdate>>();
        for (var v = from + 1; v <= version; v++)
        {
            var modules = JsonSerializer.Deserialize<JsonElement[][]>(Get(file, $"{ModulesKey}.v{v}"))
                ?? throw new FormatException($"the base payload's modules of version {v} are null");
            updates.Add([.. modules.Select(m =>
            {
                var spec = new LoraModuleSpec(m[0].GetString()!, m[1].GetInt32(), m[2].GetInt32());
                var rank = m[3].GetInt32();
                var prefix = $"v{v}.{spec.Name}";
                file.RequireShape(prefix + ".stacked_B", spec.OutFeatures, rank);
                file.RequireShape(prefix + ".stacked_A", rank, spec.InFeatures);
                file.RequireShape(prefix + ".stacked_weights", rank);
                return new StackedUpdate(spec, rank, file.ReadFloats(prefix + ".stacked_B"), file.ReadFloats(prefix + ".stacked_A"), file.ReadFloats(prefix + ".stacked_weights"));
            })]);
        }
        return (from, updates);
    }

    private static string Kind(SafetensorsFile file)
    {
        var kind = Get(file, KindKey);
        return kind is "full" or "updates" ? kind : throw new FormatException($"the base payload holds '{kind}', neither 'full' nor 'updates'");
    }

    private static string Get(SafetensorsFile file, string key) =>
        file.Metadata.TryGetValue(key, out var value) ? value : throw new FormatException($"the base payload has no '{key}' metadata");

    private static int Int(SafetensorsFile file, string key) => int.Parse(Get(file, key), NumberStyles.Integer, CultureInfo.InvariantCulture);

    /// <summary>SHA-256 of the base weights' bytes, in hex: a client whose own copy of the base matches needs no download to start.</summary>
    public static string Fingerprint(Gpt model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Convert.ToHexStringLower(SHA256.HashData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(model.Backend.ToArray(model.Parameters).AsSpan())));
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);
}
