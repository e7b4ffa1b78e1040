using FedLora.Federation.Privacy;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// FedIT (Zhang et al., 2024): FedAvg on the LoRA factors, the inexact baseline.
/// <code>
/// state      per module A (r,C), B (O,r), scale s
/// configure  every client warm-starts from the global A, B at rank r and scale s
/// upload     A_k, B_k
/// aggregate  A = sum_k p_k A_k,  B = sum_k p_k B_k          (p_k = n_k / sum n)
///            so s B A = s sum_j sum_k p_j p_k B_j A_k  !=  s sum_k p_k B_k A_k: the cross terms j != k
/// </code>
/// Heterogeneous budgets: FedIT averages factors, which needs one rank. Every client trains the
/// global rank r; a client whose budget is below r is an error that asks for r = the smallest budget
/// (clients that afford more still train r).
/// <para>Under DP (<see cref="AggregatePrivately"/>) each client's contribution is its change
/// (A_k - A, B_k - B), clipped to S; then A = A + g_A, B = B + g_B with g the noised sum over M.</para>
/// </summary>
public sealed class FedItStrategy : IFederatedStrategy, IPrivateAggregation
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>FedIT over <paramref name="modules"/> at rank <c>settings.Rank</c>.</summary>
    public FedItStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
    }

    /// <inheritdoc/>
    public string Name => "fedit";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>A fresh rank-r adapter per module.</summary>
    public GlobalState Initialize(Random random) => RoundRules.FreshState(_modules, Settings, random);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            RoundRules.RequireRank(clients[k], Settings.Rank, "FedIT");
            assignments[k] = new ClientAssignment(round, clients[k], Settings.Rank, Settings.Rank, Settings.Alpha, Settings.Scaling,
                Settings.Scale, state.Adapters, TrainableFactors.Both);
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

    /// <summary>A = A + g_A, B = B + g_B: g = (sum_k clip_S(A_k - A, B_k - B) + N(0, (z S)^2)) / M.</summary>
    public AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var adapters = PrivateAggregation.PaddedAverage(_modules, Settings.Rank, trainsA: true, plan, state, pairs, sum);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling));
    }
}
