using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// A federated LoRA method as pure math (Flower's strategy): <see cref="ConfigureRound"/> says what
/// every sampled client receives and may train, <see cref="Aggregate"/> turns their updates into the
/// next global state. No I/O, no clocks; randomness only from the generator passed in; inputs are
/// never modified. The round loop trains, moves the bytes and applies <see cref="AggregationResult.BaseUpdate"/>.
/// </summary>
public interface IFederatedStrategy
{
    /// <summary>Short name: "fslora", "flora", "fedit", "zero-padding", "hetlora", "flexlora", "ffa-lora".</summary>
    string Name { get; }

    /// <summary>The adapted layers, in order.</summary>
    IReadOnlyList<LoraModuleSpec> Modules { get; }

    /// <summary>Global rank, alpha, scaling.</summary>
    LoraSettings Settings { get; }

    /// <summary>The state before round 0.</summary>
    GlobalState Initialize(Random random);

    /// <summary>
    /// Assignments for round <paramref name="round"/> (which must be <c>state.Round</c>) to
    /// <paramref name="clients"/>, in their order. Deterministic in (state, clients, generator state).
    /// </summary>
    RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random);

    /// <summary>
    /// The next state from the updates of a non-empty subset of the plan's clients (stragglers may be
    /// missing: p_k is then normalised over those who reported). Every update is validated against its
    /// assignment (round, shapes, index sets, finite values) before any of it is used; updates are
    /// combined in plan order, whatever order they arrived in.
    /// </summary>
    AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates);
}

/// <summary>The assignments of one round, in the order the clients were given.</summary>
public sealed class RoundPlan
{
    /// <summary>
    /// The plan of round <paramref name="round"/>: one assignment per sampled client, each for this round,
    /// no client twice. The list is copied.
    /// </summary>
    /// <exception cref="ArgumentException">The list is empty, holds a null, an assignment of another round, or a client twice.</exception>
    public RoundPlan(int round, IReadOnlyList<ClientAssignment> assignments)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(round);
        ArgumentNullException.ThrowIfNull(assignments);
        if (assignments.Count == 0) throw new ArgumentException($"the plan of round {round} has no assignments: a round needs at least one client", nameof(assignments));
        var ids = new HashSet<int>();
        foreach (var assignment in assignments)
        {
            ArgumentNullException.ThrowIfNull(assignment, nameof(assignments));
            if (assignment.Round != round) throw new ArgumentException($"client {assignment.ClientId}'s assignment is for round {assignment.Round}, not the plan's round {round}", nameof(assignments));
            if (!ids.Add(assignment.ClientId)) throw new ArgumentException($"client {assignment.ClientId} has two assignments in round {round}", nameof(assignments));
        }
        Round = round;
        Assignments = [.. assignments];
    }

    /// <summary>The round index.</summary>
    public int Round { get; }

    /// <summary>One per sampled client.</summary>
    public IReadOnlyList<ClientAssignment> Assignments { get; }

    /// <summary>The assignment of client <paramref name="clientId"/>.</summary>
    public ClientAssignment For(int clientId) =>
        Assignments.FirstOrDefault(assignment => assignment.ClientId == clientId)
        ?? throw new ArgumentException($"client {clientId} was not sampled in round {Round}", nameof(clientId));
}

/// <summary>The outcome of a round's aggregation.</summary>
public sealed class AggregationResult
{
    /// <summary>
    /// The next <paramref name="state"/>, and for a method that merges into the base weights (FLoRA) the
    /// update to merge, at most one per module of the state. The list is copied; the tensors are not.
    /// </summary>
    /// <exception cref="ArgumentException">The base update holds a null, a module the state does not adapt, or a module twice.</exception>
    public AggregationResult(GlobalState state, IReadOnlyList<StackedUpdate>? baseUpdate = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (baseUpdate is not null)
        {
            var modules = new HashSet<LoraModuleSpec>(state.Modules);
            var seen = new HashSet<LoraModuleSpec>();
            foreach (var update in baseUpdate)
            {
                ArgumentNullException.ThrowIfNull(update, nameof(baseUpdate));
                if (!modules.Contains(update.Module)) throw new ArgumentException($"the base update of module {update.Module.Name} is for a layer the state does not adapt", nameof(baseUpdate));
                if (!seen.Add(update.Module)) throw new ArgumentException($"module {update.Module.Name} has two base updates", nameof(baseUpdate));
            }
            baseUpdate = [.. baseUpdate];
        }
        State = state;
        BaseUpdate = baseUpdate;
        Broadcast = baseUpdate is null ? [] : baseUpdate.SelectMany(update => update.ToWire()).ToArray();
    }

    /// <summary>The next global state.</summary>
    public GlobalState State { get; }

    /// <summary>
    /// FLoRA: per module, W += B diag(w) A that the server's model merges into its base weights now, and
    /// every client before it next trains (a new base version); null for the other methods.
    /// </summary>
    public IReadOnlyList<StackedUpdate>? BaseUpdate { get; }

    /// <summary>The tensors of FLoRA's merged update, which a client downloads before it next trains (unless the whole base is smaller); empty otherwise.</summary>
    public IReadOnlyList<WireTensor> Broadcast { get; }

    /// <summary>Data bytes of <see cref="Broadcast"/>, per client.</summary>
    public long BroadcastBytes => WireTensor.TotalBytes(Broadcast);
}
