using FedLora.Federation.Privacy;
using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// FlexLoRA (Bai et al., 2024): the server keeps the aggregated update and hands every client its best
/// rank-r_k approximation.
/// <code>
/// state      per module Delta W = sum_k p_k s_k B_k A_k (O,C), kept as its SVD U Sigma V^T:
///            B = U Sigma (O,K), A = V^T (K,C), scale 1, K = min(sum r_k, O, C) (the largest over modules)
/// configure  client k: B_k = U[:,:r_k] Sigma[:r_k] / s_k, A_k = V[:,:r_k]^T, so s_k B_k A_k is the best
///            rank-r_k approximation of Delta W (Eckart-Young). Ranks Delta W lacks (round 0, or r_k above
///            its rank) start fresh: A rows kaiming-uniform, B columns zero.
/// upload     A_k (r_k,C), B_k (O,r_k)
/// aggregate  Delta W = B_stack diag(p_k s_k) A_stack, recomputed from this round's clients, its SVD
///            taken without forming the (O,C) matrix when R = sum r_k &lt; min(O, C): thin QRs
///            B_stack = Q_B R_B, A_stack^T = Q_A R_A, SVD of the (R,R) core R_B diag(w) R_A^T = U_c S V_c^T,
///            then U = Q_B U_c, V = Q_A V_c.
/// </code>
/// Under DP see <see cref="AggregatePrivately"/>: the clipped, noised quantity is each client's change of
/// its own term of the sum, the dense s_k (B_k A_k - B_k0 A_k0).
/// </summary>
public sealed class FlexLoraStrategy : IFederatedStrategy, IPrivateAggregation
{
    private readonly LoraModuleSpec[] _modules;

    /// <summary>FlexLoRA over <paramref name="modules"/>; <c>settings.Rank</c> caps every client's rank.</summary>
    public FlexLoraStrategy(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        _modules = RoundRules.CheckSetup(modules, settings);
        Settings = settings;
    }

    /// <inheritdoc/>
    public string Name => "flexlora";

    /// <inheritdoc/>
    public IReadOnlyList<LoraModuleSpec> Modules => _modules;

    /// <inheritdoc/>
    public LoraSettings Settings { get; }

    /// <summary>Delta W = 0 (rank 0).</summary>
    public GlobalState Initialize(Random random) => new(0, RoundRules.Rank0(_modules), 0f, LoraScaling.Standard);

    /// <inheritdoc/>
    public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        RoundRules.CheckConfigure(this, round, state, clients, random);
        var assignments = new ClientAssignment[clients.Count];
        for (var k = 0; k < clients.Count; k++)
        {
            var rank = clients[k].Budget.RankFor(Settings.Rank, clients[k].Id);
            var (alpha, scale) = (Settings.AlphaFor(rank), Settings.ScaleFor(rank));
            if (state.Rank == 0)
            {
                var seed = random.Next();
                assignments[k] = new ClientAssignment(round, clients[k], rank, rank, alpha, Settings.Scaling, scale,
                    HostAdapter.Fresh(_modules, rank, new Random(seed)), TrainableFactors.Both, freshSeed: seed);
                continue;
            }
            var start = state.Adapters.Select(global => Truncate(global, rank, scale, random)).ToArray();
            assignments[k] = new ClientAssignment(round, clients[k], rank, rank, alpha, Settings.Scaling, scale, start, TrainableFactors.Both);
        }
        return new RoundPlan(round, assignments);
    }

    /// <inheritdoc/>
    public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var p = RoundRules.DataWeights(pairs);
        var svds = new FactoredSvd.Result[_modules.Length];
        for (var module = 0; module < _modules.Length; module++)
        {
            var stacked = FLoraStrategy.Stack(_modules[module], module, pairs, p);
            svds[module] = FactoredSvd.Compute(stacked.Module.OutFeatures, stacked.Module.InFeatures, stacked.Rank, stacked.B, stacked.A, stacked.RowWeights);
        }
        var rank = svds.Max(svd => svd.Rank);
        var adapters = new HostAdapter[_modules.Length];
        for (var module = 0; module < _modules.Length; module++) adapters[module] = FromSvd(_modules[module], svds[module], rank);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, rank, LoraScaling.Standard));
    }

    /// <summary>
    /// The private aggregate, per module:
    /// <code>
    /// D_k    = s_k (B_k A_k - B_k0 A_k0)   (O,C): client k's change of its own term, B_k0 A_k0 the start it was sent
    /// base   = (1/|plan|) sum over the plan's clients of s_k B_k0 A_k0
    /// DeltaW = base + (sum_k clip_S(D_k) + N(0, (z S)^2) on each of the O C entries) / M
    /// state  = the SVD of DeltaW truncated to K = min(sum of the plan's r_k, O, C) (the largest K over modules)
    /// </code>
    /// What is clipped, and why the noised sum has sensitivity S: the ordinary Delta W = sum_k p_k s_k B_k A_k
    /// splits into sum_k p_k s_k B_k0 A_k0, which the server computes from its own state and the ranks it
    /// chose, plus sum_k p_k D_k. A client enters only through D_k, so D_k (all modules flattened together) is
    /// clipped to Frobenius norm S, and adding or removing a client moves the noised sum by at most S.
    /// Clipping the factors' change instead would not bound it (B A - B0 A0 = dB A0 + B0 dA + dB dA grows with
    /// the start's norm), and clipping the whole product s_k B_k A_k would cap the global update at S for ever.
    /// Any entry of D_k can be non-zero, so the noise is dense, and the SVD runs on the dense (O,C) matrix: a
    /// truncation to public ranks, post-processing of the release. With z = 0, no clipping, every sampled
    /// client reporting and equal n_k it equals <see cref="Aggregate"/>.
    /// </summary>
    public AggregationResult AggregatePrivately(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        var pairs = RoundRules.Pair(this, plan, state, updates);
        var totals = _modules.Select(module => new double[module.OutFeatures * module.InFeatures]).ToArray();
        var contribution = _modules.Select(module => new double[module.OutFeatures * module.InFeatures]).ToArray();
        foreach (var (assignment, update) in pairs)
        {
            for (var m = 0; m < _modules.Length; m++)
            {
                var (start, factors) = (assignment.Start[m], update.Modules[m]);
                Array.Clear(contribution[m]);
                AddProduct(contribution[m], _modules[m], factors.B, factors.A!, update.Rank, assignment.Scale);
                AddProduct(contribution[m], _modules[m], start.B, start.A, assignment.Rank, -assignment.Scale);
            }
            sum.ClipAndAdd(contribution, totals);
        }
        sum.Release(totals);
        var planRank = plan.Assignments.Sum(assignment => assignment.Rank);
        var svds = new FactoredSvd.Result[_modules.Length];
        for (var m = 0; m < _modules.Length; m++)
        {
            foreach (var assignment in plan.Assignments)
            {
                var start = assignment.Start[m];
                AddProduct(totals[m], _modules[m], start.B, start.A, assignment.Rank, (double)assignment.Scale / plan.Assignments.Count);
            }
            var (c, o) = (_modules[m].InFeatures, _modules[m].OutFeatures);
            svds[m] = FactoredSvd.OfDense(o, c, totals[m], Math.Min(planRank, Math.Min(o, c)));
        }
        var rank = svds.Max(svd => svd.Rank);
        var adapters = new HostAdapter[_modules.Length];
        for (var module = 0; module < _modules.Length; module++) adapters[module] = FromSvd(_modules[module], svds[module], rank);
        return new AggregationResult(new GlobalState(state.Round + 1, adapters, rank, LoraScaling.Standard));
    }

    /// <summary>dense += coefficient B A; dense is (O,C), b (O,r), a (r,C).</summary>
    private static void AddProduct(double[] dense, LoraModuleSpec module, float[] b, float[] a, int rank, double coefficient)
    {
        var (c, o) = (module.InFeatures, module.OutFeatures);
        for (var i = 0; i < o; i++)
        {
            var row = dense.AsSpan(i * c, c);
            for (var j = 0; j < rank; j++)
            {
                var weight = coefficient * b[i * rank + j];
                if (weight == 0) continue;
                var factor = a.AsSpan(j * c, c);
                for (var col = 0; col < c; col++) row[col] += weight * factor[col];
            }
        }
    }

    /// <summary>B = U Sigma (O,K), A = V^T (K,C), zero beyond the module's own rank.</summary>
    private static HostAdapter FromSvd(LoraModuleSpec module, FactoredSvd.Result svd, int rank)
    {
        var (c, o, k) = (module.InFeatures, module.OutFeatures, svd.Rank);
        var adapter = HostAdapter.Zero(module, rank);
        for (var row = 0; row < o; row++)
        {
            for (var j = 0; j < k; j++) adapter.B[row * rank + j] = (float)(svd.U[row * k + j] * svd.Sigma[j]);
        }
        for (var j = 0; j < k; j++)
        {
            for (var col = 0; col < c; col++) adapter.A[j * c + col] = (float)svd.V[col * k + j];
        }
        return adapter;
    }

    /// <summary>
    /// Client k's start: B_k = (U Sigma)[:, :r_k] / s_k, A_k = V^T[:r_k, :]; a rank whose A row is zero
    /// (beyond Delta W's rank) gets a fresh kaiming-uniform A row and a zero B column.
    /// </summary>
    private static HostAdapter Truncate(HostAdapter global, int rank, float scale, Random random)
    {
        var (c, o) = (global.Module.InFeatures, global.Module.OutFeatures);
        var adapter = HostAdapter.Zero(global.Module, rank);
        for (var j = 0; j < rank; j++)
        {
            var row = j < global.Rank ? global.A.AsSpan(j * c, c) : [];
            if (row.IsEmpty || !row.ContainsAnyExcept(0f))
            {
                HostAdapter.FillKaimingUniform(adapter.A.AsSpan(j * c, c), c, random);
                continue;
            }
            row.CopyTo(adapter.A.AsSpan(j * c, c));
            for (var i = 0; i < o; i++) adapter.B[i * rank + j] = (float)(global.B[i * global.Rank + j] / (double)scale);
        }
        return adapter;
    }
}
