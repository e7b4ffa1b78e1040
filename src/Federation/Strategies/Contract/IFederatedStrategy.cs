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
    internal RoundPlan(int round, IReadOnlyList<ClientAssignment> assignments)
    {
        Round = round;
        Assignments = assignments;
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
    internal AggregationResult(GlobalState state, IReadOnlyList<StackedUpdate>? baseUpdate = null)
    {
        State = state;
        BaseUpdate = baseUpdate;
        Broadcast = baseUpdate is null ? [] : baseUpdate.SelectMany(update => update.ToWire()).ToArray();
    }

    /// <summary>The next global state.</summary>
    public GlobalState State { get; }

    /// <summary>
    /// FLoRA: per module, W += B diag(w) A that the server's model and every client, sampled or not,
    /// must merge into its base weights now; null for the other methods.
    /// </summary>
    public IReadOnlyList<StackedUpdate>? BaseUpdate { get; }

    /// <summary>The tensors every client downloads after this aggregation (FLoRA's merged update); empty otherwise.</summary>
    public IReadOnlyList<WireTensor> Broadcast { get; }

    /// <summary>Data bytes of <see cref="Broadcast"/>, per client.</summary>
    public long BroadcastBytes => WireTensor.TotalBytes(Broadcast);
}
