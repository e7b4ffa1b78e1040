using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>Which factors of its adapter a client may train.</summary>
public enum TrainableFactors
{
    /// <summary>A and B.</summary>
    Both,

    /// <summary>B only; A stays exactly as received (FFA-LoRA).</summary>
    BOnly,
}

/// <summary>
/// What one sampled client receives for a round: the adapter to start from (rank, alpha, the exact
/// scale to train with), what it may train, FSLoRA's rank index sets, HetLoRA's regulariser, and the
/// exact list of tensors that travel down (<see cref="Download"/>).
/// </summary>
/// <remarks>
/// To train, allocate <c>new AdapterSet(backend, Modules, AdapterRank, Alpha, Scaling)</c> and load it
/// with <see cref="AdapterExchange.Load"/>: that writes <see cref="Start"/>, sets FSLoRA's sketches,
/// and checks that the model's scale is <see cref="Scale"/> bit for bit.
/// </remarks>
public sealed class ClientAssignment
{
    /// <summary>
    /// An assignment, checked for consistency: a strategy outside FedLora builds its plans from these,
    /// and a networked client builds one from what the server sent, so nothing is taken on trust.
    /// </summary>
    /// <param name="round">The round (>= 0).</param>
    /// <param name="client">The client, as sampled.</param>
    /// <param name="rank">r_k (>= 1): the rank the client trains (FSLoRA: m_k, the size of each index set).</param>
    /// <param name="adapterRank">The rank of the adapter set the client allocates: equal to <paramref name="rank"/>,
    /// or the global r (>= <paramref name="rank"/>) for an FSLoRA sketch given by <paramref name="rankIndices"/>.</param>
    /// <param name="alpha">alpha of that adapter set (finite, > 0).</param>
    /// <param name="scaling">How the scale follows from alpha and rank.</param>
    /// <param name="scale">The scale the client trains with and the server weights it by (finite, > 0);
    /// <see cref="AdapterExchange.Load"/> refuses to train if the client's adapter set would use another.</param>
    /// <param name="start">Per module, in order, the rank-<paramref name="rank"/> adapter to start from (not copied).</param>
    /// <param name="trainable">Which factors the client may train.</param>
    /// <param name="rankIndices">FSLoRA: per module, the strictly increasing index set I_k, <paramref name="rank"/>
    /// indices in [0, <paramref name="adapterRank"/>); otherwise null.</param>
    /// <param name="freshSeed">When set, <paramref name="start"/> must be exactly
    /// <c>HostAdapter.Fresh(modules, rank, new Random(freshSeed))</c>, and only the seed travels.</param>
    /// <param name="regularizer">HetLoRA's rank self-pruning penalty; otherwise null.</param>
    /// <exception cref="ArgumentException">An argument is out of range or inconsistent with another; the message says which.</exception>
    public ClientAssignment(int round, SampledClient client, int rank, int adapterRank, float alpha, LoraScaling scaling,
        float scale, IReadOnlyList<HostAdapter> start, TrainableFactors trainable, IReadOnlyList<int[]>? rankIndices = null,
        int? freshSeed = null, HetLoraRegularizer? regularizer = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(round);
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(client.Budget, nameof(client));
        ArgumentNullException.ThrowIfNull(start);
        var id = client.Id;
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"client {id} is assigned rank {rank}; it must be >= 1");
        if (!float.IsFinite(alpha) || alpha <= 0) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, $"client {id}'s alpha must be finite and > 0");
        if (!float.IsFinite(scale) || scale <= 0) throw new ArgumentOutOfRangeException(nameof(scale), scale, $"client {id}'s scale must be finite and > 0");
        if (!Enum.IsDefined(scaling)) throw new ArgumentOutOfRangeException(nameof(scaling), scaling, "unknown LoRA scaling");
        if (!Enum.IsDefined(trainable)) throw new ArgumentOutOfRangeException(nameof(trainable), trainable, "unknown trainable factors");
        if (start.Count == 0) throw new ArgumentException($"client {id}'s assignment has no modules: it needs a start adapter per adapted module", nameof(start));
        var names = new HashSet<string>();
        foreach (var adapter in start)
        {
            ArgumentNullException.ThrowIfNull(adapter, nameof(start));
            if (adapter.Rank != rank) throw new ArgumentException($"client {id}'s start adapter of module {adapter.Module.Name} has rank {adapter.Rank}, but the assignment's rank is {rank}", nameof(start));
            if (!names.Add(adapter.Module.Name)) throw new ArgumentException($"module {adapter.Module.Name} appears twice in client {id}'s assignment", nameof(start));
        }
        CheckRankIndices(id, rank, adapterRank, start, rankIndices);
        if (freshSeed is { } seed) CheckFresh(id, rank, start, rankIndices, seed);
        regularizer?.Validate();
        Round = round;
        Client = client;
        Rank = rank;
        AdapterRank = adapterRank;
        Alpha = alpha;
        Scaling = scaling;
        Scale = scale;
        Start = start;
        Trainable = trainable;
        RankIndices = rankIndices;
        FreshSeed = freshSeed;
        Regularizer = regularizer;
        Modules = start.Select(adapter => adapter.Module).ToArray();
        Download = BuildDownload();
    }

    private static void CheckRankIndices(int id, int rank, int adapterRank, IReadOnlyList<HostAdapter> start, IReadOnlyList<int[]>? rankIndices)
    {
        if (rankIndices is null)
        {
            if (adapterRank != rank) throw new ArgumentException($"client {id} trains rank {rank} in an adapter set of rank {adapterRank}: without a sketch (rank indices) the two must be equal", nameof(adapterRank));
            return;
        }
        if (adapterRank < rank) throw new ArgumentOutOfRangeException(nameof(adapterRank), adapterRank, $"client {id}'s sketch of {rank} ranks does not fit in an adapter set of rank {adapterRank}");
        if (rankIndices.Count != start.Count) throw new ArgumentException($"client {id} has {rankIndices.Count} rank index sets for {start.Count} modules: give one per module", nameof(rankIndices));
        for (var m = 0; m < rankIndices.Count; m++)
        {
            var indices = rankIndices[m];
            ArgumentNullException.ThrowIfNull(indices, nameof(rankIndices));
            if (indices.Length != rank) throw new ArgumentException($"client {id}'s index set of module {start[m].Module.Name} has {indices.Length} indices for rank {rank}", nameof(rankIndices));
            for (var j = 0; j < indices.Length; j++)
            {
                if (indices[j] < 0 || indices[j] >= adapterRank || (j > 0 && indices[j] <= indices[j - 1]))
                {
                    throw new ArgumentException($"client {id}'s index set of module {start[m].Module.Name} is [{string.Join(", ", indices)}]: it must be strictly increasing within [0, {adapterRank})", nameof(rankIndices));
                }
            }
        }
    }

    private static void CheckFresh(int id, int rank, IReadOnlyList<HostAdapter> start, IReadOnlyList<int[]>? rankIndices, int seed)
    {
        if (rankIndices is not null) throw new ArgumentException($"client {id}'s assignment has both a fresh seed and a sketch: a fresh start is a whole adapter", nameof(rankIndices));
        var fresh = HostAdapter.Fresh(start.Select(adapter => adapter.Module).ToArray(), rank, new Random(seed));
        for (var m = 0; m < fresh.Count; m++)
        {
            if (!fresh[m].A.AsSpan().SequenceEqual(start[m].A) || !fresh[m].B.AsSpan().SequenceEqual(start[m].B))
            {
                throw new ArgumentException($"client {id}'s start adapter of module {start[m].Module.Name} is not the fresh adapter of seed {seed}, yet only the seed would travel", nameof(start));
            }
        }
    }

    /// <summary>The round this assignment belongs to.</summary>
    public int Round { get; }

    /// <summary>The client, as sampled.</summary>
    public SampledClient Client { get; }

    /// <summary>The client's id.</summary>
    public int ClientId => Client.Id;

    /// <summary>r_k: the rank the client trains (FSLoRA: m_k, the size of each index set).</summary>
    public int Rank { get; }

    /// <summary>The rank of the <see cref="AdapterSet"/> to allocate: the global r for FSLoRA (trained through sketches), else <see cref="Rank"/>.</summary>
    public int AdapterRank { get; }

    /// <summary>alpha of that adapter set.</summary>
    public float Alpha { get; }

    /// <summary>How the scale follows from alpha and rank.</summary>
    public LoraScaling Scaling { get; }

    /// <summary>
    /// The scale the client trains with and the server weights its factors by: s_k = LoraScale.Of(alpha_k, r_k);
    /// for FSLoRA s r / m_k, computed as <see cref="AdapterSet.SetSketch"/> computes it.
    /// </summary>
    public float Scale { get; }

    /// <summary>The adapted layers, in order.</summary>
    public IReadOnlyList<LoraModuleSpec> Modules { get; }

    /// <summary>Per module, the rank-<see cref="Rank"/> adapter the client starts from (FSLoRA: the sub-adapter A[I,:], B[:,I]).</summary>
    public IReadOnlyList<HostAdapter> Start { get; }

    /// <summary>Which factors the client may train.</summary>
    public TrainableFactors Trainable { get; }

    /// <summary>FSLoRA: per module, the sorted index set I_k (m_k distinct ranks of r) shared by A's rows and B's columns; otherwise null.</summary>
    public IReadOnlyList<int[]>? RankIndices { get; }

    /// <summary>
    /// When set, <see cref="Start"/> is exactly <c>HostAdapter.Fresh(Modules, Rank, new Random(FreshSeed))</c>:
    /// the client draws it itself and only the seed travels (FLoRA's fresh adapters).
    /// </summary>
    public int? FreshSeed { get; }

    /// <summary>HetLoRA: the rank self-pruning penalty to add to the local loss and the pruning rule; otherwise null.</summary>
    public HetLoraRegularizer? Regularizer { get; }

    /// <summary>The tensors sent to the client for this assignment.</summary>
    public IReadOnlyList<WireTensor> Download { get; }

    /// <summary>Data bytes of <see cref="Download"/>.</summary>
    public long DownloadBytes => WireTensor.TotalBytes(Download);

    private WireTensor[] BuildDownload()
    {
        if (FreshSeed is { } seed) return [WireTensor.OfInts("fresh_seed", [seed], 1)];
        var tensors = new List<WireTensor>();
        for (var m = 0; m < Start.Count; m++)
        {
            var adapter = Start[m];
            var (name, c, o) = (adapter.Module.Name, adapter.Module.InFeatures, adapter.Module.OutFeatures);
            tensors.Add(WireTensor.OfFloats(WireTensor.LoraA(name), adapter.A, Rank, c));
            tensors.Add(WireTensor.OfFloats(WireTensor.LoraB(name), adapter.B, o, Rank));
            if (RankIndices is not null) tensors.Add(WireTensor.OfInts(WireTensor.RankIndices(name), RankIndices[m], Rank));
        }
        return [.. tensors];
    }
}
