using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// FLoRA, stacking (Wang et al., 2024): fresh heterogeneous-rank adapters every round, merged into the
/// base weights exactly.
/// <code>
/// state      the base weights W (O,C), held by the round loop; the strategy's own state is empty (rank 0)
/// configure  client k: a fresh rank-r_k adapter (A kaiming-uniform, B zero) drawn by the client from a
///            seed it is sent; alpha_k by the settings' client scale rule (SameScale with alpha = 2r gives
///            FLoRA's alpha_k = 2 r_k); s_k = LoraScale.Of(alpha_k, r_k)
/// upload     A_k (r_k,C), B_k (O,r_k)
/// aggregate  per module, p_k = n_k / sum n, R = sum r_k:
///            B_stack = [B_1 ... B_K] (O,R), A_stack = [A_1; ...; A_K] (R,C), w = p_k s_k on client k's rows
///            W += B_stack diag(w) A_stack  =  sum_k p_k s_k B_k A_k      (exact: no cross terms)
///            and every client, sampled or not, merges the same update into its base.
/// </code>
/// s_k is the assignment's <see cref="ClientAssignment.Scale"/>, the scale the client trained with.
/// </summary>
public sealed class FLoraStrategy : IFederatedStrategy
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>FLoRA over <paramref name="modules"/>; <c>settings.Rank</c> caps every client's rank.</summary>
    public FLoraStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
    }

    /// <inheritdoc/>
    public string Name => "flora";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>An empty (rank-0) state: everything lives in the base weights.</summary>
    public GlobalState Initialize(Random random) => new(0, RoundRules.Rank0(_modules), 0f, Settings.Scaling);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            var rank = clients[k].Budget.RankFor(Settings.Rank, clients[k].Id);
            var seed = random.Next();
            var start = HostAdapter.Fresh(_modules, rank, new Random(seed));
            assignments[k] = new ClientAssignment(round, clients[k], rank, rank, Settings.AlphaFor(rank), Settings.Scaling,
                Settings.ScaleFor(rank), start, TrainableFactors.Both, freshSeed: seed);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var p = RoundRules.DataWeights(pairs);
        var merged = new StackedUpdate[_modules.Length];
        for (var module = 0; module < _modules.Length; module++) merged[module] = Stack(_modules[module], module, pairs, p);
        return new AggregationResult(new GlobalState(state.Round + 1, state.Adapters, 0f, state.Scaling), merged);
    }

    /// <summary>
    /// One module's B_stack (O,R), A_stack (R,C) and row weights p_k s_k, clients in plan order;
    /// s_k is the scale client k trained with.
    /// </summary>
    internal static StackedUpdate Stack(LoraModuleSpec spec, int module, (ClientAssignment Assignment, ClientUpdate Update)[] pairs, double[] p)
    {
        var (c, o) = (spec.InFeatures, spec.OutFeatures);
        var total = pairs.Sum(pair => pair.Update.Rank);
        var stackedB = new float[o * total];
        var stackedA = new float[total * c];
        var rowWeights = new float[total];
        var offset = 0;
        for (var k = 0; k < pairs.Length; k++)
        {
            var (assignment, update) = pairs[k];
            var rank = update.Rank;
            var factors = update.Modules[module];
            for (var row = 0; row < o; row++) factors.B.AsSpan(row * rank, rank).CopyTo(stackedB.AsSpan(row * total + offset, rank));
            factors.A!.CopyTo(stackedA.AsSpan(offset * c, rank * c));
            rowWeights.AsSpan(offset, rank).Fill((float)(p[k] * assignment.Scale));
            offset += rank;
        }
        return new StackedUpdate(spec, total, stackedB, stackedA, rowWeights);
    }
}
