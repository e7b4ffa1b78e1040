using FedLora.Federation.Privacy;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// HetLoRA (Cho et al., 2024): truncation, local rank self-pruning, sparsity-weighted zero-padding.
/// <code>
/// state      per module A (r_max,C), B (O,r_max), scale s; per client its rank after self-pruning
/// configure  r_k = min(budget_k, last pruned rank of k); client k gets A[:r_k,:], B[:,:r_k] and the
///            penalty lambda ||A[t:,:]|| ||B[:,t:]||, t = floor(gamma r_k) (see HetLoraRegularizer)
/// upload     its slice, of rank r_k, or max(1, floor(gamma r_k)) when it pruned
/// aggregate  per module, w_k = ||B_k A_k||_F / sum_j ||B_j A_j||_F, each norm computed without forming
///            B_k A_k: ||B A||_F^2 = trace((A A^T)(B^T B));
///            A = sum_k w_k pad(A_k), B = sum_k w_k pad(B_k)  (pad: zeros to r_max)
///            (if every norm is 0, w_k = p_k)
/// </code>
/// The weights follow the paper's ||Delta W_k|| with Delta W_k = B_k A_k, per module, without n_k; under
/// the SameScale rule s_k = s, so scaling the norms by s_k would not change the normalised weights.
/// <para>Under DP (<see cref="AggregatePrivately"/>) the sparsity weights go: w_k depends on client k's
/// update and, through the normalisation, scales every other client's contribution, so one client could
/// move the aggregate by far more than S. The aggregate is zero-padding's private one (p_k = 1/M, the plan's
/// dilution f_j); a client that pruned to r' &lt; r_k contributes its change on its first r' ranks and minus
/// the start on the ranks r'..r_k it dropped, all clipped to S together. The pruned ranks themselves are
/// the clients' choice, visible as the upload's rank, and shape their next assignments: DP covers the
/// adapter's values, not that rank schedule.</para>
/// </summary>
public sealed class HetLoraStrategy : IFederatedStrategy, IPrivateAggregation
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>HetLoRA over <paramref name="modules"/> with r_max = <c>settings.Rank</c>.</summary>
    public HetLoraStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings, HetLoraRegularizer? regularizer = null)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
        Regularizer = regularizer ?? new HetLoraRegularizer();
        Regularizer.Validate();
    }

    /// <inheritdoc/>
    public string Name => "hetlora";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>lambda and gamma of the self-pruning penalty.</summary>
    public HetLoraRegularizer Regularizer { get; }

    /// <summary>A fresh rank-r_max adapter per module; no client pruned yet.</summary>
    public GlobalState Initialize(Random random) => RoundRules.FreshState(_modules, Settings, random);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            var rank = clients[k].Budget.RankFor(Settings.Rank, clients[k].Id);
            if (state.ClientRanks.TryGetValue(clients[k].Id, out var pruned)) rank = Math.Min(rank, pruned);
            var start = state.Adapters.Select(adapter => LowRank.Truncate(adapter, rank)).ToArray();
            assignments[k] = new ClientAssignment(round, clients[k], rank, rank, Settings.AlphaFor(rank), Settings.Scaling,
                Settings.ScaleFor(rank), start, TrainableFactors.Both, regularizer: Regularizer);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var p = RoundRules.DataWeights(pairs);
        var adapters = RoundRules.PaddedAverage(_modules, Settings.Rank, pairs, module => NormWeights(pairs, module, p));
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling, PrunedRanks(state, pairs)));
    }

    /// <summary>Zero-padding's private aggregate (uniform weights, see the class remarks), and the pruned ranks as <see cref="Aggregate"/> records them.</summary>
    public AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var adapters = PrivateAggregation.PaddedAverage(_modules, Settings.Rank, trainsA: true, plan, state, pairs, sum);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, state.Alpha, state.Scaling, PrunedRanks(state, pairs)));
    }

    private static Dictionary<int, int> PrunedRanks(GlobalState state, (ClientAssignment Assignment, ClientUpdate Update)[] pairs)
    {
        var ranks = new Dictionary<int, int>(state.ClientRanks);
        foreach (var (_, update) in pairs) ranks[update.ClientId] = update.Rank;
        return ranks;
    }

    /// <summary>w_k = ||B_k A_k||_F / sum_j ||B_j A_j||_F for one module (p_k when every norm is 0).</summary>
    internal static double[] NormWeights((ClientAssignment Assignment, ClientUpdate Update)[] pairs, int module, double[] fallback)
    {
        var norms = pairs.Select(pair =>
        {
            var factors = pair.Update.Modules[module];
            return LowRank.ProductFrobeniusNorm(factors.A, factors.B, pair.Update.Rank, factors.Module.InFeatures, factors.Module.OutFeatures);
        }).ToArray();
        var total = norms.Sum();
        return total > 0 ? norms.Select(norm => norm / total).ToArray() : fallback;
    }
}
