using FedLora.Federation;
namespace FedLora.Server;

/// <summary>
/// Coordinate-wise robust replacements for the averaging methods (FedIT: A and B; FFA-LoRA: B, A stays
/// the shared one), where every client uploads factors of the global rank, so each coordinate of the next
/// state is a statistic of the clients' values at that coordinate. Unweighted: example counts play no part,
/// so a client cannot buy weight by lying about its data.
/// Bound: with f malicious clients of n, the median (f &lt; n/2) and the trimmed mean (f &lt;= trim * n) keep every
/// coordinate within the range of the honest clients' values there, whatever the malicious ones send.
/// </summary>
public static class RobustAggregation
{
    /// <summary>Whether <paramref name="strategy"/> can aggregate robustly.</summary>
    public static bool Supports(string strategy) => strategy is "fedit" or "ffa-lora";

    /// <summary>The next state: <paramref name="previous"/>'s metadata with factors aggregated by <paramref name="rule"/>.</summary>
    public static GlobalState Aggregate(string strategy, GlobalState previous, IReadOnlyList<ClientUpdate> updates, AggregationRule rule, double trimFraction)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(updates);
        if (!Supports(strategy)) throw new ArgumentException($"{rule} aggregation needs a method whose clients all upload the global rank (fedit, ffa-lora), not {strategy}", nameof(strategy));
        if (updates.Count == 0) throw new ArgumentException("a round needs at least one update", nameof(updates));
        var adapters = new HostAdapter[previous.Adapters.Count];
        for (var m = 0; m < adapters.Length; m++)
        {
            var global = previous.Adapters[m];
            foreach (var update in updates)
            {
                if (update.Rank != global.Rank) throw new ArgumentException($"client {update.ClientId} uploads rank {update.Rank}, the global rank is {global.Rank}", nameof(updates));
            }
            var a = strategy == "ffa-lora" ? global.A : Combine(updates.Select(u => u.Modules[m].A!).ToArray(), rule, trimFraction);
            var b = Combine(updates.Select(u => u.Modules[m].B).ToArray(), rule, trimFraction);
            adapters[m] = new HostAdapter(global.Module, global.Rank, a, b);
        }
        return new GlobalState(previous.Round + 1, adapters, previous.Alpha, previous.Scaling, previous.ClientRanks, previous.ServerOptimizer);
    }

    /// <summary>Per coordinate i: the median (mean of the two middle values for an even count) or trimmed mean of values[k][i] over k.</summary>
    public static float[] Combine(IReadOnlyList<float[]> values, AggregationRule rule, double trimFraction)
    {
        ArgumentNullException.ThrowIfNull(values);
        var (n, length) = (values.Count, values[0].Length);
        var trim = rule == AggregationRule.TrimmedMean ? (int)Math.Floor(trimFraction * n) : 0;
        var column = new float[n];
        var result = new float[length];
        for (var i = 0; i < length; i++)
        {
            for (var k = 0; k < n; k++) column[k] = values[k][i];
            Array.Sort(column);
            switch (rule)
            {
                case AggregationRule.Median:
                    result[i] = n % 2 == 1 ? column[n / 2] : (float)(((double)column[n / 2 - 1] + column[n / 2]) / 2);
                    break;
                case AggregationRule.TrimmedMean:
                    double sum = 0;
                    for (var k = trim; k < n - trim; k++) sum += column[k];
                    result[i] = (float)(sum / (n - 2 * trim));
                    break;
                default:
                    throw new ArgumentException($"{rule} is not a coordinate-wise rule", nameof(rule));
            }
        }
        return result;
    }
}
