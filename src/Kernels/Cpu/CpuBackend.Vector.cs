using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FedLora.Kernels.Cpu;

// Fill, copy, scale, axpy, weighted sum and sum of squares: one elementwise loop (Simd.Map) over
// fixed chunks of the vector, one operator struct per formula.
public unsafe partial class CpuBackend
{
    /// <summary>x = value. x is (L).</summary>
    protected override void FillCore(BufferView x, float value)
    {
        var address = Simd.Address(x);
        Simd.Map(new FillOperator(value), null, null, null, address, x.Length);
    }

    /// <summary>destination = source. Both are (L).</summary>
    protected override void CopyCore(BufferView source, BufferView destination) =>
        Simd.Map(default(CopyOperator), Simd.Address(source), null, null, Simd.Address(destination), source.Length);

    /// <summary>x *= alpha. x is (L).</summary>
    protected override void ScaleCore(float alpha, BufferView x)
    {
        var address = Simd.Address(x);
        Simd.Map(new ScaleOperator(alpha), address, null, null, address, x.Length);
    }

    /// <summary>y += alpha x. x and y are (L).</summary>
    protected override void AxpyCore(float alpha, BufferView x, BufferView y)
    {
        var ys = Simd.Address(y);
        Simd.Map(new AxpyOperator(alpha), Simd.Address(x), ys, null, ys, x.Length);
    }

    /// <summary>
    /// destination = sum_k weights[k] sources[k], accumulated in float with one rounding per term
    /// (fused multiply-add), source by source over each L1-sized chunk of the destination. Each
    /// source and destination is (L).
    /// </summary>
    protected override void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        var count = sources.Length;
        if (count == 0)
        {
            FillCore(destination, 0f);
            return;
        }
        // The sources' addresses (two floats' room each), then their weights, in one scratch block.
        var scratch = Simd.CallScratch(count * 3);
        var addresses = (float**)scratch;
        var weightCopy = scratch + 2 * count;
        for (var k = 0; k < count; k++)
        {
            addresses[k] = Simd.Address(sources[k]);
            weightCopy[k] = weights[k];
        }
        var job = new WeightedSumJob(addresses, weightCopy, count, Simd.Address(destination), destination.Length);
        CpuParallel.For(Simd.ChunkCount(destination.Length), ref job);
    }

    /// <summary>
    /// Returns sum_i x_i^2. Squares are widened to double and summed per fixed chunk; the chunks'
    /// partial sums are added in chunk order, so the result depends on the length only, never on
    /// the thread count. x is (L).
    /// </summary>
    protected override double SumOfSquaresCore(BufferView x)
    {
        var chunks = Simd.ChunkCount(x.Length);
        if (chunks == 0) return 0;
        var partials = (double*)Simd.CallScratch(2 * chunks);
        var job = new SumOfSquaresJob(Simd.Address(x), x.Length, partials);
        CpuParallel.For(chunks, ref job);
        double sum = 0;
        for (var i = 0; i < chunks; i++) sum += partials[i];
        return sum;
    }

    private readonly struct WeightedSumJob(float** sources, float* weights, int count, float* destination, int length) : IParallelJob
    {
        public void Execute(int index)
        {
            var start = index * Simd.ChunkLength;
            var n = Math.Min(Simd.ChunkLength, length - start);
            var d = destination + start;
            Simd.MapRange(new ScaleOperator(weights[0]), sources[0] + start, null, null, d, n);
            for (var k = 1; k < count; k++) Simd.MapRange(new AxpyOperator(weights[k]), sources[k] + start, d, null, d, n);
        }
    }

    private readonly struct SumOfSquaresJob(float* x, int length, double* partials) : IParallelJob
    {
        public void Execute(int index)
        {
            var start = index * Simd.ChunkLength;
            partials[index] = SumOfSquaresRange(x + start, Math.Min(Simd.ChunkLength, length - start));
        }
    }

    // Each width widens its floats to two double vectors; this reduction does not fit the
    // float-only ISimdFloat face, so it is written out per width.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static double SumOfSquaresRange(float* x, int n)
    {
        var i = 0;
        double sum = 0;
        if (SimdWidth.Use512)
        {
            Vector512<double> a0 = default, a1 = default;
            for (; i <= n - 16; i += 16)
            {
                var (lower, upper) = Vector512.Widen(Vector512.Load(x + i));
                a0 = Vector512.FusedMultiplyAdd(lower, lower, a0);
                a1 = Vector512.FusedMultiplyAdd(upper, upper, a1);
            }
            sum += Vector512.Sum(a0 + a1);
        }
        if (SimdWidth.Use256)
        {
            Vector256<double> a0 = default, a1 = default;
            for (; i <= n - 8; i += 8)
            {
                var (lower, upper) = Vector256.Widen(Vector256.Load(x + i));
                a0 = Vector256.FusedMultiplyAdd(lower, lower, a0);
                a1 = Vector256.FusedMultiplyAdd(upper, upper, a1);
            }
            sum += Vector256.Sum(a0 + a1);
        }
        if (SimdWidth.Use128)
        {
            Vector128<double> a0 = default, a1 = default;
            for (; i <= n - 4; i += 4)
            {
                var (lower, upper) = Vector128.Widen(Vector128.Load(x + i));
                a0 = Vector128.FusedMultiplyAdd(lower, lower, a0);
                a1 = Vector128.FusedMultiplyAdd(upper, upper, a1);
            }
            sum += Vector128.Sum(a0 + a1);
        }
        for (; i < n; i++) sum += (double)x[i] * x[i];
        return sum;
    }
}

/// <summary>destination = value.</summary>
internal readonly struct FillOperator(float value) : IElementwise
{
    public static int Arity => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        TVector.Create(value);
}

/// <summary>destination = x.</summary>
internal readonly struct CopyOperator : IElementwise
{
    public static int Arity => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> => x;
}

/// <summary>destination = alpha x (in place for Scale; the first term of a weighted sum).</summary>
internal readonly struct ScaleOperator(float alpha) : IElementwise
{
    public static int Arity => 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        TVector.Create(alpha) * x;
}

/// <summary>destination = alpha x + y, rounded once.</summary>
internal readonly struct AxpyOperator(float alpha) : IElementwise
{
    public static int Arity => 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> =>
        TVector.MultiplyAdd(TVector.Create(alpha), x, y);
}

/// <summary>destination = x + y.</summary>
internal readonly struct AddOperator : IElementwise
{
    public static int Arity => 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public TVector Invoke<TVector>(TVector x, TVector y, TVector z) where TVector : unmanaged, ISimdFloat<TVector> => x + y;
}
