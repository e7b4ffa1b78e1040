using FedLora.Lora;

namespace FedLora.Federation;

/// <summary>
/// Host-side slicing of LoRA factors. A is (r,C) and B is (O,r), row-major: A's rank rows are
/// contiguous, B's rank columns are strided by r.
/// </summary>
internal static class LowRank
{
    /// <summary>The first <paramref name="rank"/> ranks: A[:k,:], B[:,:k].</summary>
    public static HostAdapter Truncate(HostAdapter x, int rank)
    {
        if (rank < 0 || rank > x.Rank) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"cannot truncate rank {x.Rank} of module {x.Module.Name} to {rank}");
        var (c, o) = (x.Module.InFeatures, x.Module.OutFeatures);
        var a = x.A.AsSpan(0, rank * c).ToArray();
        var b = new float[o * rank];
        for (var row = 0; row < o; row++) x.B.AsSpan(row * x.Rank, rank).CopyTo(b.AsSpan(row * rank, rank));
        return new HostAdapter(x.Module, rank, a, b);
    }

    /// <summary>The ranks in <paramref name="indices"/>, in that order: A[I,:], B[:,I].</summary>
    public static HostAdapter Gather(HostAdapter x, int[] indices)
    {
        var (c, o, k) = (x.Module.InFeatures, x.Module.OutFeatures, indices.Length);
        var a = new float[k * c];
        var b = new float[o * k];
        for (var j = 0; j < k; j++) x.A.AsSpan(indices[j] * c, c).CopyTo(a.AsSpan(j * c, c));
        for (var row = 0; row < o; row++)
        {
            for (var j = 0; j < k; j++) b[row * k + j] = x.B[row * x.Rank + indices[j]];
        }
        return new HostAdapter(x.Module, k, a, b);
    }

    /// <summary>
    /// ||B A||_F without forming the (O,C) product: ||B A||_F^2 = trace((A A^T)(B^T B)), two (r,r) Gram
    /// matrices, O(r^2 (O + C)) work. a is (r,C), b is (O,r).
    /// </summary>
    public static double ProductFrobeniusNorm(ReadOnlySpan<float> a, ReadOnlySpan<float> b, int rank, int inFeatures, int outFeatures)
    {
        var gramA = new double[rank * rank];
        var gramB = new double[rank * rank];
        for (var i = 0; i < rank; i++)
        {
            for (var j = 0; j <= i; j++)
            {
                double sumA = 0, sumB = 0;
                for (var col = 0; col < inFeatures; col++) sumA += (double)a[i * inFeatures + col] * a[j * inFeatures + col];
                for (var row = 0; row < outFeatures; row++) sumB += (double)b[row * rank + i] * b[row * rank + j];
                gramA[i * rank + j] = gramA[j * rank + i] = sumA;
                gramB[i * rank + j] = gramB[j * rank + i] = sumB;
            }
        }
        double trace = 0;
        for (var i = 0; i < gramA.Length; i++) trace += gramA[i] * gramB[i];
        return Math.Sqrt(Math.Max(trace, 0));
    }
}

/// <summary>
/// A double-precision sum of adapters into a rank-r target, so that a weighted average of K client
/// factors rounds to float once. Smaller-rank terms are zero-padded; sketched terms are scattered.
/// </summary>
internal sealed class AdapterAccumulator
{
    private readonly double[] _a;
    private readonly double[] _b;

    /// <summary>A zero rank-<paramref name="rank"/> sum.</summary>
    public AdapterAccumulator(LoraModuleSpec module, int rank)
    {
        Module = module;
        Rank = rank;
        _a = new double[rank * module.InFeatures];
        _b = new double[module.OutFeatures * rank];
    }

    public LoraModuleSpec Module { get; }

    public int Rank { get; }

    /// <summary>A (r,C) of the sum so far.</summary>
    public double[] A => _a;

    /// <summary>B (O,r) of the sum so far.</summary>
    public double[] B => _b;

    /// <summary>A, B += weight pad(A_x), weight pad(B_x), x of rank <paramref name="rank"/> &lt;= Rank; a null factor is skipped.</summary>
    public void AddPadded(float[]? a, float[]? b, int rank, double weight)
    {
        var (c, o) = (Module.InFeatures, Module.OutFeatures);
        if (a is not null)
        {
            for (var i = 0; i < rank * c; i++) _a[i] += weight * a[i];
        }
        if (b is not null)
        {
            for (var row = 0; row < o; row++)
            {
                for (var j = 0; j < rank; j++) _b[row * Rank + j] += weight * b[row * rank + j];
            }
        }
    }

    /// <summary>A[I,:] += weight subA; B[:,I] += weight subB. subA is (k,C), subB is (O,k), k = |I|.</summary>
    public void AddScattered(float[] subA, float[] subB, int[] indices, double weight)
    {
        var (c, o, k) = (Module.InFeatures, Module.OutFeatures, indices.Length);
        for (var j = 0; j < k; j++)
        {
            for (var col = 0; col < c; col++) _a[indices[j] * c + col] += weight * subA[j * c + col];
        }
        for (var row = 0; row < o; row++)
        {
            for (var j = 0; j < k; j++) _b[row * Rank + indices[j]] += weight * subB[row * k + j];
        }
    }

    public HostAdapter ToAdapter() =>
        new(Module, Rank, Array.ConvertAll(_a, value => (float)value), Array.ConvertAll(_b, value => (float)value));
}
