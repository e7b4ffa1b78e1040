using System.Runtime.CompilerServices;

namespace FedLora.Kernels.Cpu;

// Layernorm: rows in parallel, each row a few vector passes. The parameter gradients sum over rows,
// so each fixed block of rows sums into its own partial, and the partials are added in block order.
public unsafe partial class CpuBackend
{
    private const float LayerNormEpsilon = 1e-5f;

    /// <summary>
    /// output = (input - mean) * rstd * weight + bias per row, mean and rstd = 1/sqrt(var + 1e-5)
    /// saved. input and output are (N,C), weight and bias (C), mean and rstd (N).
    /// </summary>
    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias,
        BufferView output, BufferView mean, BufferView rstd)
    {
        var rowsPerTask = LayerNormRowsPerTask(c);
        var job = new LayerNormForwardJob(c, n, rowsPerTask, Simd.Address(input), Simd.Address(weight), Simd.Address(bias),
            Simd.Address(output), Simd.Address(mean), Simd.Address(rstd));
        CpuParallel.For((n + rowsPerTask - 1) / rowsPerTask, ref job);
    }

    /// <summary>
    /// With norm = (x - mean) rstd and dnorm = weight * outputGrad per row:
    /// inputGrad += rstd (dnorm - mean(dnorm) - norm mean(dnorm norm)); weightGrad += sum_rows norm outputGrad;
    /// biasGrad += sum_rows outputGrad. outputGrad, input, inputGrad are (N,C); weight, weightGrad,
    /// biasGrad (C); mean, rstd (N).
    /// </summary>
    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        var rowsPerTask = LayerNormRowsPerTask(c);
        var tasks = (n + rowsPerTask - 1) / rowsPerTask;
        var wantsParameters = weightGrad is not null || biasGrad is not null;
        // Per task: a (C) partial of weightGrad, then one of biasGrad.
        var partials = wantsParameters && tasks > 0 ? Simd.CallScratch(tasks * 2 * c) : null;
        var job = new LayerNormBackwardJob(c, n, rowsPerTask, Simd.Address(outputGrad), Simd.Address(input), Simd.Address(weight),
            Simd.Address(mean), Simd.Address(rstd), Simd.Address(inputGrad), partials);
        CpuParallel.For(tasks, ref job);
        if (partials is null) return;
        if (weightGrad is { } dw) AddPartials(partials, tasks, 2 * c, Simd.Address(dw), c);
        if (biasGrad is { } db) AddPartials(partials + c, tasks, 2 * c, Simd.Address(db), c);
    }

    /// <summary>Rows per task: about one chunk of floats, and a function of C only (fixes the sum order).</summary>
    private static int LayerNormRowsPerTask(int c) => Math.Max(1, Simd.ChunkLength / Math.Max(1, c));

    /// <summary>destination += sum_t partials[t * stride + 0..length), partials added in order t = 0, 1, ...</summary>
    private static void AddPartials(float* partials, int count, int stride, float* destination, int length)
    {
        for (var t = 0; t < count; t++) Simd.MapRange(default(AddOperator), partials + (long)t * stride, destination, null, destination, length);
    }

    private readonly struct LayerNormForwardJob(int c, int n, int rowsPerTask, float* input, float* weight, float* bias,
        float* output, float* mean, float* rstd) : IParallelJob
    {
        public void Execute(int index)
        {
            var end = Math.Min(n, (index + 1) * rowsPerTask);
            for (var row = index * rowsPerTask; row < end; row++)
            {
                var x = input + (long)row * c;
                var y = output + (long)row * c;
                if (SimdWidth.Use512) LayerNormForwardRow<Simd512>(c, x, weight, bias, y, mean + row, rstd + row);
                else if (SimdWidth.Use256) LayerNormForwardRow<Simd256>(c, x, weight, bias, y, mean + row, rstd + row);
                else if (SimdWidth.Use128) LayerNormForwardRow<Simd128>(c, x, weight, bias, y, mean + row, rstd + row);
                else LayerNormForwardRow<SimdScalar>(c, x, weight, bias, y, mean + row, rstd + row);
            }
        }
    }

    /// <summary>One row: mean, then the variance about it (two passes, no cancellation), then the output.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void LayerNormForwardRow<TVector>(int c, float* x, float* weight, float* bias, float* y, float* mean, float* rstd)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        var vectorEnd = c - c % w;
        TVector s0 = TVector.Zero, s1 = TVector.Zero;
        var p = 0;
        for (; p + 2 * w <= vectorEnd; p += 2 * w)
        {
            s0 += TVector.Load(x + p);
            s1 += TVector.Load(x + p + w);
        }
        if (p < vectorEnd) s0 += TVector.Load(x + p);
        var sum = TVector.Sum(s0 + s1);
        for (p = vectorEnd; p < c; p++) sum += x[p];
        var m = sum / c;

        var meanVector = TVector.Create(m);
        s0 = TVector.Zero;
        for (p = 0; p < vectorEnd; p += w)
        {
            var d = TVector.Load(x + p) - meanVector;
            s0 = TVector.MultiplyAdd(d, d, s0);
        }
        var squares = TVector.Sum(s0);
        for (p = vectorEnd; p < c; p++) squares += (x[p] - m) * (x[p] - m);
        var s = 1f / MathF.Sqrt(squares / c + LayerNormEpsilon);

        var scale = TVector.Create(s);
        for (p = 0; p < vectorEnd; p += w)
        {
            var norm = (TVector.Load(x + p) - meanVector) * scale;
            TVector.MultiplyAdd(norm, TVector.Load(weight + p), TVector.Load(bias + p)).Store(y + p);
        }
        for (p = vectorEnd; p < c; p++) y[p] = (x[p] - m) * s * weight[p] + bias[p];
        *mean = m;
        *rstd = s;
    }

    private readonly struct LayerNormBackwardJob(int c, int n, int rowsPerTask, float* outputGrad, float* input, float* weight,
        float* mean, float* rstd, float* inputGrad, float* partials) : IParallelJob
    {
        public void Execute(int index)
        {
            float* dw = null, db = null;
            if (partials is not null)
            {
                dw = partials + (long)index * 2 * c;
                db = dw + c;
                new Span<float>(dw, 2 * c).Clear();
            }
            var end = Math.Min(n, (index + 1) * rowsPerTask);
            for (var row = index * rowsPerTask; row < end; row++)
            {
                var offset = (long)row * c;
                var dy = outputGrad + offset;
                var x = input + offset;
                var dx = inputGrad + offset;
                if (SimdWidth.Use512) LayerNormBackwardRow<Simd512>(c, dy, x, weight, mean[row], rstd[row], dx, dw, db);
                else if (SimdWidth.Use256) LayerNormBackwardRow<Simd256>(c, dy, x, weight, mean[row], rstd[row], dx, dw, db);
                else if (SimdWidth.Use128) LayerNormBackwardRow<Simd128>(c, dy, x, weight, mean[row], rstd[row], dx, dw, db);
                else LayerNormBackwardRow<SimdScalar>(c, dy, x, weight, mean[row], rstd[row], dx, dw, db);
            }
        }
    }

    /// <summary>One row's input gradient, and its terms of the (optional) parameter-gradient partials dw and db.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void LayerNormBackwardRow<TVector>(int c, float* dy, float* x, float* weight, float mean, float rstd,
        float* dx, float* dw, float* db)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        var vectorEnd = c - c % w;
        var meanVector = TVector.Create(mean);
        var rstdVector = TVector.Create(rstd);
        TVector sumDnorm = TVector.Zero, sumDnormNorm = TVector.Zero;
        int p;
        for (p = 0; p < vectorEnd; p += w)
        {
            var norm = (TVector.Load(x + p) - meanVector) * rstdVector;
            var dnorm = TVector.Load(weight + p) * TVector.Load(dy + p);
            sumDnorm += dnorm;
            sumDnormNorm = TVector.MultiplyAdd(dnorm, norm, sumDnormNorm);
        }
        var dnormSum = TVector.Sum(sumDnorm);
        var dnormNormSum = TVector.Sum(sumDnormNorm);
        for (p = vectorEnd; p < c; p++)
        {
            var norm = (x[p] - mean) * rstd;
            var dnorm = weight[p] * dy[p];
            dnormSum += dnorm;
            dnormNormSum += dnorm * norm;
        }
        var dnormMean = dnormSum / c;
        var dnormNormMean = dnormNormSum / c;

        var dnormMeanVector = TVector.Create(dnormMean);
        var dnormNormMeanVector = TVector.Create(dnormNormMean);
        for (p = 0; p < vectorEnd; p += w)
        {
            var g = TVector.Load(dy + p);
            var norm = (TVector.Load(x + p) - meanVector) * rstdVector;
            var dnorm = TVector.Load(weight + p) * g;
            var centred = dnorm - dnormMeanVector - norm * dnormNormMeanVector;
            TVector.MultiplyAdd(rstdVector, centred, TVector.Load(dx + p)).Store(dx + p);
            if (dw is not null)
            {
                TVector.MultiplyAdd(norm, g, TVector.Load(dw + p)).Store(dw + p);
                (TVector.Load(db + p) + g).Store(db + p);
            }
        }
        for (p = vectorEnd; p < c; p++)
        {
            var norm = (x[p] - mean) * rstd;
            var dnorm = weight[p] * dy[p];
            dx[p] += rstd * (dnorm - dnormMean - norm * dnormNormMean);
            if (dw is not null)
            {
                dw[p] += norm * dy[p];
                db[p] += dy[p];
            }
        }
    }
}
