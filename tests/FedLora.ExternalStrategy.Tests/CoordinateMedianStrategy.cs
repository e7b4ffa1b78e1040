using FedLora.Federation;
using FedLora.Lora;

namespace FedLora.ExternalStrategy.Tests;

/// <summary>
/// FedIT with a robust aggregate, written against FedLora's public strategy API only.
/// <code>
/// state      per module A (r,C), B (O,r), scale s
/// configure  every client warm-starts from the global A, B at rank r and scale s (as FedIT)
/// upload     A_k, B_k
/// aggregate  A[i] = median_k A_k[i],  B[i] = median_k B_k[i]   (coordinate-wise; the mean of the two
///            middle values for an even count; unweighted, so a client's data size buys no influence)
/// </code>
/// </summary>
public sealed class CoordinateMedianStrategy : IFederatedStrategy
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>The strategy over <paramref name="modules"/> at rank <c>settings.Rank</c>.</summary>
    public CoordinateMedianStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
    }

    /// <inheritdoc/>
    public string Name => "fedit-median";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <inheritdoc/>
    public GlobalState Initialize(Random random) => RoundRules.FreshState(_modules, Settings, random);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            var client = clients[k];
            var affordable = client.Budget.Rank ?? client.Budget.RankFor(Settings.Rank, client.Id);
            if (affordable < Settings.Rank)
            {
                throw new ArgumentException($"the median of factors needs one rank, but client {client.Id} affords {client.Budget} < the global rank {Settings.Rank}", nameof(clients));
            }
            assignments[k] = new ClientAssignment(round, client, Settings.Rank, Settings.Rank, Settings.Alpha, Settings.Scaling,
                Settings.Scale, state.Adapters, TrainableFactors.Both);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var adapters = new HostAdapter[_modules.Length];
        for (var m = 0; m < _modules.Length; m++)
        {
            var a = Median(pairs.Select(pair => pair.Update.Modules[m].A!).ToArray());
            var b = Median(pairs.Select(pair => pair.Update.Modules[m].B).ToArray());
            adapters[m] = new HostAdapter(_modules[m], Settings.Rank, a, b);
        }
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling));
    }

    /// <summary>Per coordinate i, the median of values[k][i] over k.</summary>
    private static float[] Median(float[][] values)
    {
        var result = new float[values[0].Length];
        var column = new float[values.Length];
        for (var i = 0; i < result.Length; i++)
        {
            for (var k = 0; k < values.Length; k++) column[k] = values[k][i];
            Array.Sort(column);
            var middle = column.Length / 2;
            result[i] = column.Length % 2 == 1 ? column[middle] : (float)(((double)column[middle - 1] + column[middle]) / 2);
        }
        return result;
    }
}
