using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// The validation every strategy shares, with errors that say what to change, and the steps most
/// strategies take. A strategy written outside FedLora calls <see cref="CheckSetup"/> in its
/// constructor, <see cref="CheckConfigure"/> first in <see cref="IFederatedStrategy.ConfigureRound"/>
/// and <see cref="Pair"/> first in <see cref="IFederatedStrategy.Aggregate"/>, and so refuses exactly
/// what the built-in strategies refuse.
/// </summary>
public static class RoundRules
{
    /// <summary>
    /// Checks the modules (at least one, sizes >= 1, names distinct) and the settings (rank in
    /// [1, min(C, O)] of every module, alpha finite and > 0); returns a copy of the modules.
    /// </summary>
    public static LoraModuleSpec[] CheckSetup(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings)
    {
        ArgumentNullException.ThrowIfNull(modules);
        ArgumentNullException.ThrowIfNull(settings);
        if (modules.Count == 0) throw new ArgumentException("a federated run needs at least one adapted module", nameof(modules));
        if (settings.Rank < 1) throw new ArgumentOutOfRangeException(nameof(settings), settings.Rank, "the global LoRA rank must be >= 1");
        var names = new HashSet<string>();
        foreach (var module in modules)
        {
            ArgumentNullException.ThrowIfNull(module);
            if (module.InFeatures < 1 || module.OutFeatures < 1) throw new ArgumentException($"module {module.Name} is {module.OutFeatures}x{module.InFeatures}: both sizes must be >= 1", nameof(modules));
            if (!names.Add(module.Name)) throw new ArgumentException($"module {module.Name} is listed twice", nameof(modules));
            if (settings.Rank > Math.Min(module.InFeatures, module.OutFeatures))
            {
                throw new ArgumentOutOfRangeException(nameof(settings), settings.Rank,
                    $"rank {settings.Rank} exceeds min(C, O) = {Math.Min(module.InFeatures, module.OutFeatures)} of layer {module.Name} ({module.OutFeatures}x{module.InFeatures}): lower the rank");
            }
        }
        if (!float.IsFinite(settings.Alpha) || settings.Alpha <= 0) throw new ArgumentOutOfRangeException(nameof(settings), settings.Alpha, "LoRA alpha must be finite and > 0");
        return [.. modules];
    }

    /// <summary>
    /// Checks a call of <see cref="IFederatedStrategy.ConfigureRound"/>: the state is the strategy's
    /// and after <paramref name="round"/> rounds, and the clients are at least one, with distinct ids
    /// >= 0, budgets, and at least one example each.
    /// </summary>
    public static void CheckConfigure(IFederatedStrategy strategy, int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(clients);
        ArgumentNullException.ThrowIfNull(random);
        CheckState(strategy, state);
        if (round != state.Round) throw new ArgumentException($"round {round} cannot be configured from the state after {state.Round} rounds: configure round {state.Round}", nameof(round));
        if (clients.Count == 0) throw new ArgumentException($"round {round} has no sampled clients: a round needs at least one", nameof(clients));
        var ids = new HashSet<int>();
        foreach (var client in clients)
        {
            ArgumentNullException.ThrowIfNull(client);
            ArgumentNullException.ThrowIfNull(client.Budget);
            if (client.Id < 0) throw new ArgumentException($"client id {client.Id} is negative", nameof(clients));
            if (client.ExampleCount < 1) throw new ArgumentException($"client {client.Id} has {client.ExampleCount} examples: a sampled client needs at least one", nameof(clients));
            if (!ids.Add(client.Id)) throw new ArgumentException($"client {client.Id} is sampled twice in round {round}", nameof(clients));
        }
    }

    /// <summary>
    /// Validates every update against its assignment (round, client sampled and heard once, rank, modules,
    /// factors the assignment lets it train, FSLoRA index sets, finite values) and returns
    /// (assignment, update) pairs in plan order, so that the result does not depend on arrival order.
    /// Clients of the plan that sent nothing are left out.
    /// </summary>
    public static (ClientAssignment Assignment, ClientUpdate Update)[] Pair(IFederatedStrategy strategy, RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(updates);
        CheckState(strategy, state);
        if (plan.Round != state.Round) throw new ArgumentException($"the plan is for round {plan.Round} but the state expects round {state.Round}", nameof(plan));
        if (updates.Count == 0) throw new ArgumentException($"round {plan.Round} received no updates: nothing to aggregate", nameof(updates));
        var byClient = new Dictionary<int, ClientUpdate>();
        foreach (var update in updates)
        {
            ArgumentNullException.ThrowIfNull(update);
            if (update.Round != plan.Round) throw new ArgumentException($"client {update.ClientId} sent an update for round {update.Round} during round {plan.Round}", nameof(updates));
            if (!plan.Assignments.Any(assignment => assignment.ClientId == update.ClientId)) throw new ArgumentException($"client {update.ClientId} was not sampled in round {plan.Round}", nameof(updates));
            if (!byClient.TryAdd(update.ClientId, update)) throw new ArgumentException($"client {update.ClientId} sent two updates in round {plan.Round}", nameof(updates));
        }
        var pairs = new List<(ClientAssignment, ClientUpdate)>();
        foreach (var assignment in plan.Assignments)
        {
            if (!byClient.TryGetValue(assignment.ClientId, out var update)) continue;
            CheckUpdate(assignment, update);
            pairs.Add((assignment, update));
        }
        return [.. pairs];
    }

    /// <summary>p_k = n_k / sum of n over the clients that reported.</summary>
    public static double[] DataWeights((ClientAssignment Assignment, ClientUpdate Update)[] pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        double total = pairs.Sum(pair => (double)pair.Assignment.Client.ExampleCount);
        return pairs.Select(pair => pair.Assignment.Client.ExampleCount / total).ToArray();
    }

    /// <summary>Round 0 of a method whose global state is one fresh rank-r adapter per module (r = settings.Rank).</summary>
    public static GlobalState FreshState(IReadOnlyList<LoraModuleSpec> modules, LoraSettings settings, Random random)
    {
        ArgumentNullException.ThrowIfNull(modules);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(random);
        return new GlobalState(0, HostAdapter.Fresh(modules, settings.Rank, random), settings.Alpha, settings.Scaling);
    }

    /// <summary>
    /// Per module, A = sum_k p_k pad(A_k) and B = sum_k p_k pad(B_k) at rank r, pad filling ranks
    /// r_k..r-1 with zeros (an update without A leaves A zero): FedIT's, zero-padding's and FFA-LoRA's
    /// factor average.
    /// </summary>
    internal static HostAdapter[] PaddedAverage(LoraModuleSpec[] modules, int rank,
        (ClientAssignment Assignment, ClientUpdate Update)[] pairs, double[] p) =>
        PaddedAverage(modules, rank, pairs, _ => p);

    /// <summary>
    /// The padded factor average with weights chosen per module (HetLoRA's norm weights): the weights of
    /// module m are <paramref name="weightsOf"/>(m).
    /// </summary>
    internal static HostAdapter[] PaddedAverage(LoraModuleSpec[] modules, int rank,
        (ClientAssignment Assignment, ClientUpdate Update)[] pairs, Func<int, double[]> weightsOf)
    {
        var adapters = new HostAdapter[modules.Length];
        for (var module = 0; module < modules.Length; module++)
        {
            var weights = weightsOf(module);
            var sum = new AdapterAccumulator(modules[module], rank);
            for (var k = 0; k < pairs.Length; k++)
            {
                var factors = pairs[k].Update.Modules[module];
                sum.AddPadded(factors.A, factors.B, pairs[k].Update.Rank, weights[k]);
            }
            adapters[module] = sum.ToAdapter();
        }
        return adapters;
    }

    /// <summary>
    /// FedIT and FFA-LoRA train one rank r on every client. A client that affords more trains r; one
    /// that affords less is an error, since averaging factors needs one rank.
    /// </summary>
    internal static void RequireRank(SampledClient client, int rank, string method)
    {
        var affordable = client.Budget.Rank ?? client.Budget.RankFor(rank, client.Id);
        if (affordable < rank)
        {
            throw new ArgumentException(
                $"{method} needs the same rank on every client, but client {client.Id} affords {client.Budget} < the global rank {rank}: set the global rank to the smallest budget");
        }
    }

    internal static IReadOnlyList<HostAdapter> Rank0(IReadOnlyList<LoraModuleSpec> modules) =>
        modules.Select(module => HostAdapter.Zero(module, 0)).ToArray();

    private static void CheckState(IFederatedStrategy strategy, GlobalState state)
    {
        if (!state.Modules.SequenceEqual(strategy.Modules))
        {
            throw new ArgumentException($"the state's modules ({string.Join(", ", state.Modules.Select(m => m.Name))}) are not the strategy's ({string.Join(", ", strategy.Modules.Select(m => m.Name))})", nameof(state));
        }
    }

    private static void CheckUpdate(ClientAssignment assignment, ClientUpdate update)
    {
        var id = update.ClientId;
        var prunedRank = assignment.Regularizer?.PrunedRank(assignment.Rank);
        if (update.Rank != assignment.Rank && update.Rank != prunedRank)
        {
            var allowed = prunedRank is { } pruned && pruned != assignment.Rank ? $"{assignment.Rank} or, pruned, {pruned}" : $"{assignment.Rank}";
            throw new ArgumentException($"client {id} uploaded rank {update.Rank} but was assigned rank {allowed}", nameof(update));
        }
        if (update.Modules.Count != assignment.Modules.Count) throw new ArgumentException($"client {id} uploaded {update.Modules.Count} modules, expected {assignment.Modules.Count}", nameof(update));
        for (var m = 0; m < update.Modules.Count; m++)
        {
            var module = update.Modules[m];
            var name = assignment.Modules[m].Name;
            if (module.Module != assignment.Modules[m]) throw new ArgumentException($"client {id} uploaded module {module.Module.Name} ({module.Module.OutFeatures}x{module.Module.InFeatures}) where {name} was expected", nameof(update));
            if (assignment.Trainable == TrainableFactors.BOnly && module.A is not null) throw new ArgumentException($"client {id} uploaded A of module {name}, but only B is trainable", nameof(update));
            if (assignment.Trainable == TrainableFactors.Both && module.A is null) throw new ArgumentException($"client {id} uploaded no A for module {name}", nameof(update));
            var expected = assignment.RankIndices?[m];
            if (expected is null != module.RankIndices is null || (expected is not null && !expected.AsSpan().SequenceEqual(module.RankIndices)))
            {
                throw new ArgumentException($"client {id}'s rank indices for module {name} are [{Join(module.RankIndices)}], but its sketch is [{Join(expected)}]", nameof(update));
            }
            CheckFinite(module.A, id, name, "A");
            CheckFinite(module.B, id, name, "B");
        }
    }

    private static void CheckFinite(float[]? values, int id, string module, string factor)
    {
        if (values is null) return;
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i])) throw new ArgumentException($"client {id} uploaded a non-finite {factor}[{i}] = {values[i]} for module {module}");
        }
    }

    private static string Join(int[]? values) => values is null ? "none" : string.Join(", ", values);
}
