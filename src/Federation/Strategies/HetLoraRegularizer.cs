namespace FedLora.Federation;

/// <summary>
/// HetLoRA's rank self-pruning (Cho et al., 2024), on the client. For an adapter of rank r, A (r,C)
/// and B (O,r), let t = floor(gamma r) be the first rank of the tail. The local loss gains, per module,
/// <code>
///   P = lambda ||A[t:,:]||_F ||B[:,t:]||_F
///   dP/dA[t:,:] = lambda ||B[:,t:]|| A[t:,:] / ||A[t:,:]||      (0 where ||A[t:,:]|| = 0)
///   dP/dB[:,t:] = lambda ||A[t:,:]|| B[:,t:] / ||B[:,t:]||      (0 where ||B[:,t:]|| = 0)
/// </code>
/// which pushes the tail ranks towards zero. Pruning (our reading of the paper's rule): after local
/// training the client compares the tail's norm product, summed over modules, with the same quantity
/// on the adapter it received; if it shrank, the tail is dropped and the client uploads rank
/// max(1, floor(gamma r)); the server keeps that client at the reduced rank from then on. One rank per
/// client (not per module), since a client's adapters share one rank.
/// </summary>
/// <param name="Lambda">lambda >= 0, the penalty weight (paper: 1e-3).</param>
/// <param name="Gamma">gamma in (0, 1], the kept fraction of ranks (paper: 0.99).</param>
public sealed record HetLoraRegularizer(double Lambda = 1e-3, double Gamma = 0.99)
{
    /// <summary>t = floor(gamma r), taken in decimal so that 0.99 * 100 is 99.</summary>
    public int TailStart(int rank)
    {
        Validate();
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        return (int)decimal.Floor((decimal)Gamma * rank);
    }

    /// <summary>The rank after one pruning step: max(1, floor(gamma r)).</summary>
    public int PrunedRank(int rank) => Math.Max(1, TailStart(rank));

    /// <summary>||A[t:,:]||_F ||B[:,t:]||_F of one module. a is (r,C), b is (O,r).</summary>
    public double TailNormProduct(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inFeatures, int outFeatures)
    {
        var (normA, normB) = TailNorms(a, b, rank, inFeatures, outFeatures);
        return normA * normB;
    }

    /// <summary>P = lambda ||A[t:,:]||_F ||B[:,t:]||_F of one module. a is (r,C), b is (O,r).</summary>
    public double Penalty(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inFeatures, int outFeatures) =>
        Lambda * TailNormProduct(a, b, rank, inFeatures, outFeatures);

    /// <summary>
    /// Accumulates dP/dA into gradA (r,C) and dP/dB into gradB (O,r) (+=, like every backward op) and
    /// returns P. a is (r,C), b is (O,r).
    /// </summary>
    public double AccumulateGradient(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inFeatures, int outFeatures,
        Span<float> gradA, Span<float> gradB)
    {
        var (normA, normB) = TailNorms(a, b, rank, inFeatures, outFeatures);
        if (gradA.Length != a.Length) throw new ArgumentException($"gradA must be (r,C) like A ({a.Length} floats), got {gradA.Length}", nameof(gradA));
        if (gradB.Length != b.Length) throw new ArgumentException($"gradB must be (O,r) like B ({b.Length} floats), got {gradB.Length}", nameof(gradB));
        var t = TailStart(rank);
        if (normA > 0)
        {
            var coefficient = Lambda * normB / normA;
            for (var i = t * inFeatures; i < rank * inFeatures; i++) gradA[i] += (float)(coefficient * a[i]);
        }
        if (normB > 0)
        {
            var coefficient = Lambda * normA / normB;
            for (var o = 0; o < outFeatures; o++)
            {
                for (var j = t; j < rank; j++) gradB[o * rank + j] += (float)(coefficient * b[o * rank + j]);
            }
        }
        return Lambda * normA * normB;
    }

    /// <summary>
    /// The rank a client uploads after local training: <see cref="PrunedRank"/> when the tail norm
    /// product summed over modules is smaller on <paramref name="trained"/> than on
    /// <paramref name="received"/>, else <paramref name="rank"/>. Both lists hold rank-r adapters.
    /// </summary>
    public int RankAfterTraining(int rank, IReadOnlyList<HostAdapter> received, IReadOnlyList<HostAdapter> trained)
    {
        ArgumentNullException.ThrowIfNull(received);
        ArgumentNullException.ThrowIfNull(trained);
        if (received.Count != trained.Count) throw new ArgumentException($"{received.Count} received modules but {trained.Count} trained ones", nameof(trained));
        double before = 0, after = 0;
        for (var m = 0; m < received.Count; m++)
        {
            var (c, o) = (received[m].Module.InFeatures, received[m].Module.OutFeatures);
            before += TailNormProduct(received[m].A, received[m].B, rank, c, o);
            after += TailNormProduct(trained[m].A, trained[m].B, rank, c, o);
        }
        return after < before ? PrunedRank(rank) : rank;
    }

    private (double NormA, double NormB) TailNorms(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inFeatures, int outFeatures)
    {
        if (a.Length != (long)rank * inFeatures) throw new ArgumentException($"A must be (r,C) = ({rank},{inFeatures}), got {a.Length} floats", nameof(a));
        if (b.Length != (long)outFeatures * rank) throw new ArgumentException($"B must be (O,r) = ({outFeatures},{rank}), got {b.Length} floats", nameof(b));
        var t = TailStart(rank);
        double sumA = 0, sumB = 0;
        for (var i = t * inFeatures; i < rank * inFeatures; i++) sumA += (double)a[i] * a[i];
        for (var o = 0; o < outFeatures; o++)
        {
            for (var j = t; j < rank; j++) sumB += (double)b[o * rank + j] * b[o * rank + j];
        }
        return (Math.Sqrt(sumA), Math.Sqrt(sumB));
    }

    /// <summary>Throws unless lambda >= 0 is finite and gamma is in (0, 1].</summary>
    internal void Validate()
    {
        if (!(Lambda >= 0) || double.IsInfinity(Lambda)) throw new ArgumentOutOfRangeException(nameof(Lambda), Lambda, "HetLoRA's lambda must be finite and >= 0");
        if (!(Gamma > 0 && Gamma <= 1)) throw new ArgumentOutOfRangeException(nameof(Gamma), Gamma, "HetLoRA's gamma must be in (0, 1]");
    }
}
