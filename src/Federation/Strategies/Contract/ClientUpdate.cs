using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// One module's trained factors as a client uploads them: A (r,C) unless only B was trained, B (O,r),
/// and for FSLoRA the index set I the sub-adapter sits at (the values, not the change: the server
/// subtracts the start it sent, which is the same count of numbers, m_k (O + C) per module).
/// </summary>
/// <param name="Module">The layer.</param>
/// <param name="A">A (r,C), or null when the assignment trains B only.</param>
/// <param name="B">B (O,r).</param>
/// <param name="RankIndices">FSLoRA's I_k, echoed for validation; otherwise null.</param>
public sealed record ModuleUpdate(LoraModuleSpec Module, float[]? A, float[] B, int[]? RankIndices = null);

/// <summary>What one client sends back after local training, and the exact tensors that travel up.</summary>
public sealed class ClientUpdate
{
    /// <summary>Checks that every module's factors have rank <paramref name="rank"/>.</summary>
    public ClientUpdate(int clientId, int round, int rank, IReadOnlyList<ModuleUpdate> modules)
    {
        ArgumentNullException.ThrowIfNull(modules);
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"client {clientId} uploads rank {rank}; it must be >= 1");
        foreach (var module in modules)
        {
            ArgumentNullException.ThrowIfNull(module);
            ArgumentNullException.ThrowIfNull(module.Module);
            ArgumentNullException.ThrowIfNull(module.B);
            var (name, c, o) = (module.Module.Name, module.Module.InFeatures, module.Module.OutFeatures);
            if (module.A is not null && module.A.Length != (long)rank * c)
            {
                throw new ArgumentException($"client {clientId}: A of module {name} must be (r,C) = ({rank},{c}), got {module.A.Length} floats", nameof(modules));
            }
            if (module.B.Length != (long)o * rank)
            {
                throw new ArgumentException($"client {clientId}: B of module {name} must be (O,r) = ({o},{rank}), got {module.B.Length} floats", nameof(modules));
            }
            if (module.RankIndices is not null && module.RankIndices.Length != rank)
            {
                throw new ArgumentException($"client {clientId}: module {name} has {module.RankIndices.Length} rank indices for rank {rank}", nameof(modules));
            }
        }
        ClientId = clientId;
        Round = round;
        Rank = rank;
        Modules = modules;
    }

    /// <summary>The sender.</summary>
    public int ClientId { get; }

    /// <summary>The round the update answers.</summary>
    public int Round { get; }

    /// <summary>The rank of the uploaded factors (HetLoRA: after self-pruning).</summary>
    public int Rank { get; }

    /// <summary>Per module, in the strategy's module order.</summary>
    public IReadOnlyList<ModuleUpdate> Modules { get; }

    /// <summary>The tensors that travel up.</summary>
    public IEnumerable<WireTensor> Upload
    {
        get
        {
            foreach (var module in Modules)
            {
                var (name, c, o) = (module.Module.Name, module.Module.InFeatures, module.Module.OutFeatures);
                if (module.A is not null) yield return WireTensor.OfFloats(WireTensor.LoraA(name), module.A, Rank, c);
                yield return WireTensor.OfFloats(WireTensor.LoraB(name), module.B, o, Rank);
                if (module.RankIndices is not null) yield return WireTensor.OfInts(WireTensor.RankIndices(name), module.RankIndices, Rank);
            }
        }
    }

    /// <summary>Data bytes of <see cref="Upload"/>.</summary>
    public long UploadBytes => WireTensor.TotalBytes(Upload);
}
