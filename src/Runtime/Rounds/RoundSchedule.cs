using FedLora.Federation;

namespace FedLora.Runtime;

/// <summary>
/// Every draw of a federated job as a pure function of its seed and the round: which clients a round
/// samples, the round's random source for the strategy, and each client's batch seed. A server restarted
/// between rounds, a networked client and the in-process simulation all draw exactly the same.
/// </summary>
public static class RoundSchedule
{
    /// <summary>The random source of round <paramref name="round"/>: it samples the clients, then the strategy configures the round with it.</summary>
    public static Random RoundRandom(int seed, int round) => new(unchecked(seed * 1_000_003 + (round + 1) * 7_919));

    /// <summary>
    /// The random source of round <paramref name="round"/>'s DP noise in a simulation: apart from every other draw,
    /// so that turning DP on changes nothing else. Known to whoever knows the seed: a server uses a secret source.
    /// </summary>
    public static Random PrivacyRandom(int seed, int round) => new(unchecked(seed * 999_983 + (round + 1) * 104_729 + 31));

    /// <summary>The seed of client <paramref name="clientId"/>'s batches in round <paramref name="round"/>.</summary>
    public static int BatchSeed(int seed, int round, int clientId) => unchecked(seed * 1_000_003 + round * 1_009 + clientId);

    /// <summary>
    /// <paramref name="count"/> of <paramref name="population"/> (client ids 0..N-1 in order) drawn without
    /// replacement from <paramref name="random"/>, in id order.
    /// </summary>
    public static IReadOnlyList<SampledClient> Sample(Random random, IReadOnlyList<SampledClient> population, int count)
    {
        ArgumentNullException.ThrowIfNull(random);
        ArgumentNullException.ThrowIfNull(population);
        if (count < 1 || count > population.Count) throw new ArgumentOutOfRangeException(nameof(count), count, $"a round samples between 1 and {population.Count} clients");
        var ids = Enumerable.Range(0, population.Count).ToArray();
        random.Shuffle(ids);
        return [.. ids.Take(count).Order().Select(id => population[id])];
    }
}
