using MathNet.Numerics.Distributions;

namespace FedLora.Runtime;

/// <summary>
/// Splits a pool of examples over clients: IID (a seeded shuffle dealt round-robin) or non-IID by
/// label with Dirichlet(alpha) proportions (the FedIT/Shepherd allocation: for each label, the
/// fraction of its examples each client gets is drawn from Dirichlet(alpha); small alpha, skewed
/// clients). The natural splits (Dolly's shipped 10 files, Shakespeare by speaker) come with the data.
/// </summary>
public static class Partitioner
{
    /// <summary>An IID split into <paramref name="clients"/> parts of sizes differing by at most one.</summary>
    public static IReadOnlyList<IReadOnlyList<T>> Iid<T>(IReadOnlyList<T> items, int clients, int seed)
    {
        ArgumentNullException.ThrowIfNull(items);
        CheckClients(items.Count, clients);
        var order = Enumerable.Range(0, items.Count).ToArray();
        new Random(seed).Shuffle(order);
        var parts = Enumerable.Range(0, clients).Select(_ => new List<T>()).ToArray();
        for (var i = 0; i < order.Length; i++) parts[i % clients].Add(items[order[i]]);
        return parts;
    }

    /// <summary>
    /// A non-IID split: each label's examples are divided over the clients in proportions drawn from
    /// Dirichlet(<paramref name="alpha"/>). Draws repeat (from the same seeded source) until every client
    /// has at least one example.
    /// </summary>
    public static IReadOnlyList<IReadOnlyList<T>> Dirichlet<T>(IReadOnlyList<T> items, Func<T, string> label, int clients, double alpha, int seed)
    {
        ArgumentNullException.ThrowIfNull(items);
        ArgumentNullException.ThrowIfNull(label);
        CheckClients(items.Count, clients);
        if (!(alpha > 0) || !double.IsFinite(alpha)) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "the Dirichlet concentration alpha must be finite and > 0");
        var random = new Random(seed);
        var byLabel = items.Select((item, index) => (item, index)).GroupBy(x => label(x.item), StringComparer.Ordinal)
            .OrderBy(g => g.Key, StringComparer.Ordinal).ToArray();
        const int Attempts = 100;
        for (var attempt = 0; attempt < Attempts; attempt++)
        {
            var parts = Enumerable.Range(0, clients).Select(_ => new List<T>()).ToArray();
            foreach (var group in byLabel)
            {
                var members = group.Select(x => x.item).ToArray();
                random.Shuffle(members);
                var weights = new double[clients];
                for (var k = 0; k < clients; k++) weights[k] = Gamma.Sample(random, alpha, 1.0);
                var total = weights.Sum();
                // Cumulative proportions decide where each client's share of this label ends.
                double cumulative = 0;
                var start = 0;
                for (var k = 0; k < clients; k++)
                {
                    cumulative += weights[k] / total;
                    var end = k == clients - 1 ? members.Length : (int)Math.Round(cumulative * members.Length);
                    for (var i = start; i < end; i++) parts[k].Add(members[i]);
                    start = Math.Max(start, end);
                }
            }
            if (parts.All(p => p.Count > 0)) return parts;
        }
        throw new InvalidOperationException(
            $"Dirichlet(alpha = {alpha}) left a client empty in {Attempts} draws of {items.Count} examples over {clients} clients: raise alpha or use fewer clients");
    }

    private static void CheckClients(int items, int clients)
    {
        if (clients < 1) throw new ArgumentOutOfRangeException(nameof(clients), clients, "a split needs at least one client");
        if (items < clients) throw new ArgumentException($"{items} examples cannot give each of {clients} clients at least one", nameof(clients));
    }
}
