using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// What a strategy keeps between rounds. Per module, a low-rank part (B, A) with one scale s: the
/// server's global model is W + s B A on every adapted layer, W the base weights held by the round
/// loop. Strategy by strategy:
/// <list type="bullet">
/// <item>FSLoRA, FedIT, zero-padding, HetLoRA, FFA-LoRA: the global adapter (rank r or r_max, scale s);</item>
/// <item>FlexLoRA: the aggregated update sum_k p_k s_k B_k A_k as its SVD, B = U Sigma, A = V^T, s = 1;</item>
/// <item>FLoRA: nothing (rank 0): each round's update is merged into W (see <see cref="AggregationResult.BaseUpdate"/>).</item>
/// </list>
/// plus HetLoRA's per-client pruned ranks and FSLoRA's optional server-Adam moments. Immutable by
/// convention: strategies never modify a state, they return the next one.
/// </summary>
public sealed class GlobalState
{
    /// <summary>Creates a state; every adapter must have the same rank.</summary>
    public GlobalState(int round, IReadOnlyList<HostAdapter> adapters, float alpha, LoraScaling scaling,
        IReadOnlyDictionary<int, int>? clientRanks = null, ServerAdamState? serverOptimizer = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(round);
        ArgumentNullException.ThrowIfNull(adapters);
        if (adapters.Count == 0) throw new ArgumentException("a global state needs at least one adapted module", nameof(adapters));
        var rank = adapters[0].Rank;
        foreach (var adapter in adapters)
        {
            ArgumentNullException.ThrowIfNull(adapter);
            if (adapter.Rank != rank) throw new ArgumentException($"module {adapter.Module.Name} has rank {adapter.Rank} but module {adapters[0].Module.Name} has rank {rank}: a global state has one rank", nameof(adapters));
        }
        Round = round;
        Adapters = adapters;
        Modules = adapters.Select(adapter => adapter.Module).ToArray();
        Rank = rank;
        Alpha = alpha;
        Scaling = scaling;
        Scale = LoraScale.Of(alpha, rank, scaling);
        ClientRanks = clientRanks ?? new Dictionary<int, int>();
        ServerOptimizer = serverOptimizer;
    }

    /// <summary>Rounds aggregated so far: the next round to configure has this index.</summary>
    public int Round { get; }

    /// <summary>The global low-rank part of every module, in module order.</summary>
    public IReadOnlyList<HostAdapter> Adapters { get; }

    /// <summary>The adapted layers, in order.</summary>
    public IReadOnlyList<LoraModuleSpec> Modules { get; }

    /// <summary>The rank of <see cref="Adapters"/> (0 for FLoRA).</summary>
    public int Rank { get; }

    /// <summary>alpha such that <c>LoraScale.Of(Alpha, Rank, Scaling) == Scale</c>: build an evaluation <see cref="AdapterSet"/> with it.</summary>
    public float Alpha { get; }

    /// <summary>How <see cref="Scale"/> follows from alpha and rank.</summary>
    public LoraScaling Scaling { get; }

    /// <summary>s: the global model is W + s B A per module.</summary>
    public float Scale { get; }

    /// <summary>HetLoRA: each client's rank after its last self-pruning (absent: not pruned yet).</summary>
    public IReadOnlyDictionary<int, int> ClientRanks { get; }

    /// <summary>FSLoRA with a server Adam optimizer: its moments; otherwise null.</summary>
    public ServerAdamState? ServerOptimizer { get; }
}

/// <summary>
/// The moments of a FedAdam server optimizer (Reddi et al., 2021) over the global adapters: per
/// module, first and second moments shaped like A and B, and the number of steps taken.
/// </summary>
/// <param name="Step">Server steps taken so far.</param>
/// <param name="FirstMoment">m, one A- and B-shaped pair per module.</param>
/// <param name="SecondMoment">v, one A- and B-shaped pair per module.</param>
public sealed record ServerAdamState(int Step, IReadOnlyList<HostAdapter> FirstMoment, IReadOnlyList<HostAdapter> SecondMoment);
