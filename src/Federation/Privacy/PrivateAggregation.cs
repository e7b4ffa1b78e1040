using FedLora.Lora;

namespace FedLora.Federation.Privacy;

/// <summary>
/// Entry points of private aggregation for a round loop, and the factor-space private mean the
/// FedAvg-like strategies share.
/// </summary>
/// <remarks>
/// Which methods support DP, and what each clips (its contribution; the norm bound S holds for it):
/// <list type="bullet">
/// <item>FedIT, FFA-LoRA, zero-padding, HetLoRA: the change of the uploaded factors from the start the
/// client was sent, placed at its ranks of the global adapter (FFA-LoRA: B only), plus, for a HetLoRA
/// client that pruned, minus the start of the ranks it dropped (their contribution falls to zero);</item>
/// <item>FSLoRA: the change of the sketched sub-adapter, scattered to its index set;</item>
/// <item>FlexLoRA: the change of the client's dense product, s_k (B_k A_k - B_k0 A_k0) (O,C);</item>
/// <item>FLoRA: refused. It stacks each client's factors side by side and merges B_stack diag(w) A_stack:
/// the server never forms a sum it could noise, and noising the stacked factors would be local DP,
/// noise z S on each client's own rank-r_k factors, which drowns a single update.</item>
/// </list>
/// </remarks>
public static class PrivateAggregation
{
    /// <summary>Refuses a strategy that cannot aggregate privately, saying why; call it before a DP run starts.</summary>
    /// <exception cref="NotSupportedException">The strategy does not implement <see cref="IPrivateAggregation"/>.</exception>
    public static IPrivateAggregation RequireSupport(IFederatedStrategy strategy)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        return strategy switch
        {
            IPrivateAggregation supported => supported,
            FLoraStrategy => throw new NotSupportedException(
                "differential privacy is not available for FLoRA: it stacks each client's factors individually, so the server never forms a sum to noise, " +
                "and local DP (noise z S on each client's own factors) would drown a single rank-r update. Use another method with DP, or run FLoRA without it"),
            _ => throw new NotSupportedException(
                $"method {strategy.Name} does not implement IPrivateAggregation, so it cannot clip and noise its round's sum: run it without DP"),
        };
    }

    /// <summary><see cref="IPrivateAggregation.AggregatePrivately"/> of <paramref name="strategy"/>, refused as <see cref="RequireSupport"/> refuses.</summary>
    public static AggregationResult Aggregate(IFederatedStrategy strategy, RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates, PrivateSum sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        return RequireSupport(strategy).AggregatePrivately(plan, state, updates, sum);
    }

    /// <summary>
    /// Per module, the released mean g = (sum_k clip(Delta_k) + noise) / M of the clients' factor changes
    /// in the rank-<paramref name="rank"/> global layout: A (rank,C) unless <paramref name="trainsA"/> is
    /// false (then null: nobody changes A, so it carries no noise), B (O,rank). Client k's change puts
    /// upload rank j at global rank I_k[j] (FSLoRA's sketch) or j (a prefix); ranks the client was assigned
    /// but pruned count as value 0, so their change is minus the start.
    /// </summary>
    internal static (double[]? A, double[] B)[] NoisedMeanChange(LoraModuleSpec[] modules, int rank, bool trainsA,
        (ClientAssignment Assignment, ClientUpdate Update)[] pairs, PrivateSum sum)
    {
        var totals = Layout(modules, rank, trainsA);
        var contribution = Layout(modules, rank, trainsA);
        foreach (var (assignment, update) in pairs)
        {
            foreach (var part in contribution) Array.Clear(part);
            var p = 0;
            for (var m = 0; m < modules.Length; m++)
            {
                var (c, o) = (modules[m].InFeatures, modules[m].OutFeatures);
                var (start, factors, indices) = (assignment.Start[m], update.Modules[m], assignment.RankIndices?[m]);
                var (assigned, uploaded) = (assignment.Rank, update.Rank);
                if (trainsA)
                {
                    var a = contribution[p++];
                    for (var j = 0; j < assigned; j++)
                    {
                        var at = (indices?[j] ?? j) * c;
                        for (var col = 0; col < c; col++) a[at + col] = (j < uploaded ? factors.A![j * c + col] : 0.0) - start.A[j * c + col];
                    }
                }
                var b = contribution[p++];
                for (var row = 0; row < o; row++)
                {
                    for (var j = 0; j < assigned; j++)
                    {
                        b[row * rank + (indices?[j] ?? j)] = (j < uploaded ? factors.B[row * uploaded + j] : 0.0) - start.B[row * assigned + j];
                    }
                }
            }
            sum.ClipAndAdd(contribution, totals);
        }
        sum.Release(totals);
        var result = new (double[]? A, double[] B)[modules.Length];
        var next = 0;
        for (var m = 0; m < modules.Length; m++) result[m] = (trainsA ? totals[next++] : null, totals[next++]);
        return result;
    }

    /// <summary>
    /// The private counterpart of the padded factor average (FedIT, FFA-LoRA, zero-padding, HetLoRA), with p_k
    /// = 1/M: rank j of the next adapter is f_j (global rank j) + g_j, where f_j is the fraction of the plan's
    /// clients assigned more than j ranks (public: the server chose the ranks) and g the released mean change.
    /// With every client reporting, no clipping and z = 0 this is sum_k (1/M) pad(A_k), pad(B_k): the
    /// ordinary average at equal weights.
    /// </summary>
    internal static HostAdapter[] PaddedAverage(LoraModuleSpec[] modules, int rank, bool trainsA, RoundPlan plan, GlobalState state,
        (ClientAssignment Assignment, ClientUpdate Update)[] pairs, PrivateSum sum)
    {
        var g = NoisedMeanChange(modules, rank, trainsA, pairs, sum);
        var kept = new double[rank];
        for (var j = 0; j < rank; j++) kept[j] = plan.Assignments.Count(assignment => assignment.Rank > j) / (double)plan.Assignments.Count;
        var adapters = new HostAdapter[modules.Length];
        for (var m = 0; m < modules.Length; m++)
        {
            var (c, o, global) = (modules[m].InFeatures, modules[m].OutFeatures, state.Adapters[m]);
            var a = global.A;
            if (g[m].A is { } changeA)
            {
                a = new float[rank * c];
                for (var i = 0; i < a.Length; i++) a[i] = (float)(kept[i / c] * global.A[i] + changeA[i]);
            }
            var b = new float[o * rank];
            for (var i = 0; i < b.Length; i++) b[i] = (float)(kept[i % rank] * global.B[i] + g[m].B[i]);
            adapters[m] = new HostAdapter(modules[m], rank, a, b);
        }
        return adapters;
    }

    /// <summary>Per module, A (rank,C) when <paramref name="trainsA"/>, then B (O,rank): the parts of one flattened vector.</summary>
    private static double[][] Layout(LoraModuleSpec[] modules, int rank, bool trainsA)
    {
        var parts = new List<double[]>();
        foreach (var module in modules)
        {
            if (trainsA) parts.Add(new double[rank * module.InFeatures]);
            parts.Add(new double[module.OutFeatures * rank]);
        }
        return [.. parts];
    }
}
