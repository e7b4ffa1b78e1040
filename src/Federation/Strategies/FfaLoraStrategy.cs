using FedLora.Federation.Privacy;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// FFA-LoRA (Sun et al., 2024): A frozen at its random init, only B trained and averaged.
/// <code>
/// state      per module A (r,C), fixed forever; B (O,r); scale s
/// configure  every client gets A and B at rank r and trains B only
/// upload     B_k (O,r)
/// aggregate  B = sum_k p_k B_k;  A unchanged
///            exact: s (sum_k p_k B_k) A = sum_k p_k s B_k A, since every client shares A
/// </code>
/// Heterogeneous budgets: as FedIT, one rank r on every client (a budget below r is an error). A
/// travels down every round (clients keep no state between rounds).
/// <para>Under DP (<see cref="AggregatePrivately"/>) each client's contribution is B_k - B alone, clipped
/// to S; B = B + g with g the noised sum over M, and A, which nobody changes, carries no noise.</para>
/// </summary>
public sealed class FfaLoraStrategy : IFederatedStrategy, IPrivateAggregation
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>FFA-LoRA over <paramref name="modules"/> at rank <c>settings.Rank</c>.</summary>
    public FfaLoraStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
    }

    /// <inheritdoc/>
    public string Name => "ffa-lora";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>A fresh rank-r adapter per module; its A is never changed again.</summary>
    public GlobalState Initialize(Random random) => RoundRules.FreshState(_modules, Settings, random);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            RoundRules.RequireRank(clients[k], Settings.Rank, "FFA-LoRA");
            assignments[k] = new ClientAssignment(round, clients[k], Settings.Rank, Settings.Rank, Settings.Alpha, Settings.Scaling,
                Settings.Scale, state.Adapters, TrainableFactors.BOnly);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var p = RoundRules.DataWeights(pairs);
        // B averaged; A stays the global one (no client changed it).
        var adapters = RoundRules.PaddedAverage(_modules, Settings.Rank, pairs, p)
            .Select((average, module) => new HostAdapter(_modules[module], Settings.Rank, state.Adapters[module].A, average.B))
            .ToArray();
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling));
    }

    /// <summary>B = B + (sum_k clip_S(B_k - B) + N(0, (z S)^2)) / M; A unchanged.</summary>
    public AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var adapters = PrivateAggregation.PaddedAverage(_modules, Settings.Rank, trainsA: false, plan, state, pairs, sum);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling));
    }
}
