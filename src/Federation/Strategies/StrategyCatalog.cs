using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>The strategies by their command-line names.</summary>
public static class StrategyCatalog
{
    /// <summary>Every method, in the order a comparison lists them.</summary>
    public static IReadOnlyList<string> Names { get; } = ["fslora", "flora", "fedit", "zero-padding", "hetlora", "flexlora", "ffa-lora"];

    /// <summary>
    /// The strategy called <paramref name="name"/> over <paramref name="modules"/>; unknown names
    /// throw with the list of valid ones.
    /// </summary>
    public static IFederatedStrategy Create(string name, IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings) =>
        name?.Trim().ToLowerInvariant() switch
        {
            "fslora" => new FsLoraStrategy(modules, settings),
            "flora" => new FLoraStrategy(modules, settings),
            "fedit" => new FedItStrategy(modules, settings),
            "zero-padding" => new ZeroPaddingStrategy(modules, settings),
            "hetlora" => new HetLoraStrategy(modules, settings),
            "flexlora" => new FlexLoraStrategy(modules, settings),
            "ffa-lora" => new FfaLoraStrategy(modules, settings),
            _ => throw new ArgumentException($"unknown method '{name}': choose one of {string.Join(", ", Names)}", nameof(name)),
        };
}
