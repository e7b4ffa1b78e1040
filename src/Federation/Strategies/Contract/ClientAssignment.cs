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
    internal ClientAssignment(int round, SampledClient client, int rank, int adapterRank, float alpha, LoraScaling scaling,
        float scale, IReadOnlyList<HostAdapter> start, TrainableFactors trainable, IReadOnlyList<int[]>? rankIndices = null,
        int? freshSeed = null, HetLoraRegularizer? regularizer = null)
    {
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
