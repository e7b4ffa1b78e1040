using System.Runtime.CompilerServices;

namespace FedLora.Kernels.Cpu;

// Softmax cross-entropy: rows in parallel; per row a max pass, an exp-and-sum pass that writes the
// unnormalised probabilities, and a scaling pass.
public unsafe partial class CpuBackend
{
    /// <summary>
    /// probabilities = softmax(logits) per row (with the row max subtracted before exp);
    /// losses[i] = log(sum_v e^(z_v - max)) + max - z[targets[i]], or 0 where targets[i] = -1.
    /// logits and probabilities are (N,V), targets and losses are (N).
    /// </summary>
    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets,
        BufferView probabilities, BufferView losses)
    {
        var rowsPerTask = Math.Max(1, Simd.ChunkLength / Math.Max(1, vocab));
        fixed (int* targetAddress = targets)
        {
            var job = new CrossEntropyForwardJob(n, vocab, rowsPerTask, Simd.Address(logits), targetAddress,
                Simd.Address(probabilities), Simd.Address(losses));
            CpuParallel.For((n + rowsPerTask - 1) / rowsPerTask, ref job);
        }
    }

    /// <summary>
    /// logitsGrad[i,:] += lossScale (probabilities[i,:] - onehot(targets[i])) for rows whose target
    /// is not -1; when not accumulating, = instead, and the other rows are set to 0. probabilities and
    /// logitsGrad are (N,V), targets is (N).
    /// </summary>
    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets,
        float lossScale, BufferView logitsGrad, bool accumulate)
    {
        var rowsPerTask = Math.Max(1, Simd.ChunkLength / Math.Max(1, vocab));
        fixed (int* targetAddress = targets)
        {
            var job = new CrossEntropyBackwardJob(n, vocab, rowsPerTask, Simd.Address(probabilities), targetAddress, lossScale,
                Simd.Address(logitsGrad), accumulate);
            CpuParallel.For((n + rowsPerTask - 1) / rowsPerTask, ref job);
        }
    }

    private readonly struct CrossEntropyForwardJob(int n, int vocab, int rowsPerTask, float* logits, int* targets,
        float* probabilities, float* losses) : IParallelJob
    {
        public void Execute(int index)
        {
            var end = Math.Min(n, (index + 1) * rowsPerTask);
            for (var row = index * rowsPerTask; row < end; row++)
            {
                var z = logits + (long)row * vocab;
                var probs = probabilities + (long)row * vocab;
                float max, sum;
                if (SimdWidth.Use512) (max, sum) = SoftmaxRow<Simd512>(vocab, z, probs);
                else if (SimdWidth.Use256) (max, sum) = SoftmaxRow<Simd256>(vocab, z, probs);
                else if (SimdWidth.Use128) (max, sum) = SoftmaxRow<Simd128>(vocab, z, probs);
                else (max, sum) = SoftmaxRow<SimdScalar>(vocab, z, probs);
                var target = targets[row];
                losses[row] = target < 0 ? 0f : (float)(Math.Log(sum) + max - z[target]);
            }
        }
    }

    /// <summary>probabilities = e^(z - max) / sum over one row of length V; returns (max, sum).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (float Max, float Sum) SoftmaxRow<TVector>(int vocab, float* z, float* probabilities)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        var vectorEnd = vocab - vocab % w;
        var max = float.NegativeInfinity;
        int v;
        if (vectorEnd > 0)
        {
            var m = TVector.Load(z);
            for (v = w; v < vectorEnd; v += w) m = TVector.Max(m, TVector.Load(z + v));
            max = TVector.MaxAcross(m);
        }
        for (v = vectorEnd; v < vocab; v++) max = MathF.Max(max, z[v]);

        var maxVector = TVector.Create(max);
        var sums = TVector.Zero;
        for (v = 0; v < vectorEnd; v += w)
        {
            var e = Simd.Exp(TVector.Load(z + v) - maxVector);
            e.Store(probabilities + v);
            sums += e;
        }
        var sum = TVector.Sum(sums);
        for (v = vectorEnd; v < vocab; v++)
        {
            var e = Simd.Exp(SimdScalar.Load(z + v) - SimdScalar.Create(max));
            e.Store(probabilities + v);
            sum += SimdScalar.Sum(e);
        }

        var inverse = 1f / sum;
        var inverseVector = TVector.Create(inverse);
        for (v = 0; v < vectorEnd; v += w) (TVector.Load(probabilities + v) * inverseVector).Store(probabilities + v);
        for (v = vectorEnd; v < vocab; v++) probabilities[v] *= inverse;
        return (max, sum);
    }

    private readonly struct CrossEntropyBackwardJob(int n, int vocab, int rowsPerTask, float* probabilities, int* targets,
        float lossScale, float* logitsGrad, bool accumulate) : IParallelJob
    {
        public void Execute(int index)
        {
            var end = Math.Min(n, (index + 1) * rowsPerTask);
            for (var row = index * rowsPerTask; row < end; row++)
            {
                var target = targets[row];
                var probs = probabilities + (long)row * vocab;
                var dz = logitsGrad + (long)row * vocab;
                if (target < 0)
                {
                    if (!accumulate) Simd.MapRange(new FillOperator(0f), null, null, null, dz, vocab);
                }
                else if (accumulate)
                {
                    // The target's term is p - 1, rounded once like every other element's: keep its old gradient.
                    var old = dz[target];
                    Simd.MapRange(new AxpyOperator(lossScale), probs, dz, null, dz, vocab);
                    dz[target] = MathF.FusedMultiplyAdd(lossScale, probs[target] - 1f, old);
                }
                else
                {
                    Simd.MapRange(new ScaleOperator(lossScale), probs, null, null, dz, vocab);
                    dz[target] = lossScale * (probs[target] - 1f);
                }
            }
        }
    }
}
