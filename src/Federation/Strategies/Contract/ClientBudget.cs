namespace FedLora.Federation;

/// <summary>
/// What one client can afford: a LoRA rank r_k, or a sketch ratio in (0, 1] of the global rank r
/// (r_k = ceil(ratio r)). Every strategy accepts both, so that methods compare on equal budgets:
/// FSLoRA trains m_k = r_k sketched ranks, the others an adapter of rank r_k.
/// </summary>
public sealed record ClientBudget
{
    private ClientBudget(int? rank, double? ratio)
    {
        Rank = rank;
        Ratio = ratio;
    }

    /// <summary>The affordable rank, or null for a ratio budget.</summary>
    public int? Rank { get; }

    /// <summary>The affordable fraction of the global rank, or null for a rank budget.</summary>
    public double? Ratio { get; }

    /// <summary>A budget of rank <paramref name="rank"/> (>= 1).</summary>
    public static ClientBudget OfRank(int rank)
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "a client's LoRA rank must be >= 1");
        return new ClientBudget(rank, null);
    }

    /// <summary>A budget of a fraction <paramref name="ratio"/> in (0, 1] of the global rank.</summary>
    public static ClientBudget OfRatio(double ratio)
    {
        if (!(ratio > 0 && ratio <= 1)) throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "a sketch ratio must be in (0, 1]");
        return new ClientBudget(null, ratio);
    }

    /// <summary>One rank budget per client, client i getting <c>ranks[i]</c>.</summary>
    public static IReadOnlyList<ClientBudget> FromRanks(IReadOnlyList<int> ranks, int clientCount)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        CheckCount(ranks.Count, clientCount, "ranks");
        return ranks.Select(OfRank).ToArray();
    }

    /// <summary>One ratio budget per client, client i getting <c>ratios[i]</c>.</summary>
    public static IReadOnlyList<ClientBudget> FromRatios(IReadOnlyList<double> ratios, int clientCount)
    {
        ArgumentNullException.ThrowIfNull(ratios);
        CheckCount(ratios.Count, clientCount, "ratios");
        return ratios.Select(OfRatio).ToArray();
    }

    /// <summary>
    /// r_k against a global rank r: the rank itself (an error above r), or ceil(ratio r), the
    /// product taken in decimal so that e.g. 0.3 * 10 is 3, not 3.0000000000000004 rounded up to 4.
    /// </summary>
    /// <exception cref="ArgumentException">A rank budget is above <paramref name="globalRank"/>; the message names client <paramref name="clientId"/>.</exception>
    public int RankFor(int globalRank, int clientId)
    {
        if (Rank is { } rank)
        {
            if (rank > globalRank)
            {
                throw new ArgumentException($"client {clientId} has a rank budget of {rank}, above the global rank {globalRank}: raise the global rank or lower the budget");
            }
            return rank;
        }
        return Math.Max(1, (int)decimal.Ceiling((decimal)Ratio!.Value * globalRank));
    }

    /// <inheritdoc/>
    public override string ToString() => Rank is { } rank ? $"rank {rank}" : $"ratio {Ratio}";

    private static void CheckCount(int count, int clientCount, string what)
    {
        if (clientCount < 1) throw new ArgumentOutOfRangeException(nameof(clientCount), clientCount, "a federation needs at least one client");
        if (count != clientCount) throw new ArgumentException($"{count} {what} given for {clientCount} clients: give exactly one per client", what);
    }
}

/// <summary>A client sampled for a round.</summary>
/// <param name="Id">The client's id (>= 0), stable across rounds.</param>
/// <param name="ExampleCount">n_k, its number of training examples (> 0); p_k = n_k / sum of n over the round's clients.</param>
/// <param name="Budget">What it can afford.</param>
public sealed record SampledClient(int Id, int ExampleCount, ClientBudget Budget);
