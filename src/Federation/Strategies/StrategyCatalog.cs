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

    /// <summary>The strategy's LoRA settings and every client's budget for <paramref name="method"/>.</summary>
    /// <remarks>
    /// FSLoRA turns the rank budgets into sketch ratios r_k / r of its rank-r global adapter (or takes
    /// <paramref name="ratios"/>). FedIT and FFA-LoRA average adapters of one shape, so every client trains
    /// the smallest budget's rank. The others give client k rank r_k under the global rank r. Alpha
    /// defaults to 2r, and every client trains at the same scale s = alpha / r.
    /// </remarks>
    /// <param name="method">One of <see cref="Names"/>.</param>
    /// <param name="ranks">Each client's rank budget r_k.</param>
    /// <param name="globalRank">The global rank r (usually the largest budget).</param>
    /// <param name="alpha">LoRA alpha of the rank the clients train, or null for twice that rank.</param>
    /// <param name="ratios">FSLoRA only: explicit sketch ratios instead of r_k / r.</param>
    public static (LoraSettings Settings, IReadOnlyList<ClientBudget> Budgets) Budgets(string method, IReadOnlyList<int> ranks, int globalRank,
        float? alpha, IReadOnlyList<double>? ratios = null)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        var clients = ranks.Count;
        if (method == "fslora")
        {
            return (new LoraSettings(globalRank, alpha ?? 2f * globalRank),
                ClientBudget.FromRatios(ratios ?? ranks.Select(r => (double)r / globalRank).ToArray(), clients));
        }
        if (method is "fedit" or "ffa-lora")
        {
            var rank = ranks.Min();
            return (new LoraSettings(rank, alpha ?? 2f * rank), ClientBudget.FromRanks(Enumerable.Repeat(rank, clients).ToArray(), clients));
        }
        return (new LoraSettings(globalRank, alpha ?? 2f * globalRank), ClientBudget.FromRanks(ranks, clients));
    }
}
