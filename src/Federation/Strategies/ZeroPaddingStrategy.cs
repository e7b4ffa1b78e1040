using FedLora.Federation.Privacy;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// Zero-padding: heterogeneous ranks as prefixes of one rank-r_max adapter.
/// <code>
/// state      per module A (r_max,C), B (O,r_max), scale s
/// configure  client k gets the first r_k ranks: A[:r_k,:] (r_k,C), B[:,:r_k] (O,r_k), alpha_k by the
///            client scale rule (SameScale: s_k = s, so the slice acts as the global adapter's prefix)
/// upload     its rank-r_k slice
/// aggregate  A = sum_k p_k pad(A_k),  B = sum_k p_k pad(B_k)      pad: zeros in ranks r_k..r_max-1
/// </code>
/// A rank j only keeps the weight of the clients that trained it (sum of p_k over r_k > j): ranks no
/// reporting client trained become zero. That dilution is the method's, kept as published.
/// <para>Under DP (<see cref="AggregatePrivately"/>) p_k = 1/M and each client's contribution is its padded
/// change pad(A_k - A[:r_k,:]), pad(B_k - B[:,:r_k]), clipped to S; rank j of the result is
/// f_j (global rank j) + g_j, f_j the fraction of the plan's clients assigned more than j ranks (the
/// published dilution, from ranks the server chose) and g the noised sum over M.</para>
/// </summary>
public sealed class ZeroPaddingStrategy : IFederatedStrategy, IPrivateAggregation
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>Zero-padding over <paramref name="modules"/> with r_max = <c>settings.Rank</c>.</summary>
    public ZeroPaddingStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
    }

    /// <inheritdoc/>
    public string Name => "zero-padding";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>A fresh rank-r_max adapter per module.</summary>
    public GlobalState Initialize(Random random) => RoundRules.FreshState(_modules, Settings, random);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            var rank = clients[k].Budget.RankFor(Settings.Rank, clients[k].Id);
            var start = state.Adapters.Select(adapter => LowRank.Truncate(adapter, rank)).ToArray();
            assignments[k] = new ClientAssignment(round, clients[k], rank, rank, Settings.AlphaFor(rank), Settings.Scaling,
                Settings.ScaleFor(rank), start, TrainableFactors.Both);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var p = RoundRules.DataWeights(pairs);
        var adapters = RoundRules.PaddedAverage(_modules, Settings.Rank, pairs, p);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling));
    }

    /// <summary>Rank j: f_j (global rank j) + (sum_k clip_S(pad(change_k)) + N(0, (z S)^2))_j / M.</summary>
    public AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var adapters = PrivateAggregation.PaddedAverage(_modules, Settings.Rank, trainsA: true, plan, state, pairs, sum);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling));
    }
}
