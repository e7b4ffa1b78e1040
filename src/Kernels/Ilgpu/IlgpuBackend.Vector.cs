using ILGPU;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Vector ops: fill, copy, scale, axpy, weighted sum, sum of squares.
public sealed partial class IlgpuBackend
{
    /// <summary>Partial sums of the first SumOfSquares pass; fixed so that the result is deterministic.</summary>
    private const int SumOfSquaresLanes = 4096;

    private readonly double[] _sumOfSquaresHost = new double[SumOfSquaresLanes];

    private Action<Index1D, ArrayView<float>, float>? _fill;
    private Action<Index1D, ArrayView<float>, ArrayView<float>>? _copy;
    private Action<Index1D, ArrayView<float>, float>? _scale;
    private Action<Index1D, float, ArrayView<float>, ArrayView<float>>? _axpy;
    private Action<Index1D, float, ArrayView<float>, ArrayView<double>, int>? _accumulateWeighted;
    private Action<Index1D, ArrayView<double>, ArrayView<float>>? _storeDouble;
    private Action<Index1D, ArrayView<float>, ArrayView<double>>? _sumOfSquaresPartials;

    /// <summary>x[i] = value.</summary>
    private static void FillKernel(Index1D i, ArrayView<float> x, float value) => x[i] = value;

    /// <summary>destination[i] = source[i].</summary>
    private static void CopyKernel(Index1D i, ArrayView<float> source, ArrayView<float> destination) => destination[i] = source[i];

    /// <summary>x[i] *= alpha.</summary>
    private static void ScaleKernel(Index1D i, ArrayView<float> x, float alpha) => x[i] *= alpha;

    /// <summary>y[i] += alpha x[i].</summary>
    private static void AxpyKernel(Index1D i, float alpha, ArrayView<float> x, ArrayView<float> y) => y[i] += alpha * x[i];

    /// <summary>sum[i] = (first ? 0 : sum[i]) + weight x[i], in double as the reference sums.</summary>
    private static void AccumulateWeightedKernel(Index1D i, float weight, ArrayView<float> x, ArrayView<double> sum, int first) =>
        sum[i] = (first != 0 ? 0.0 : sum[i]) + (double)weight * x[i];

    /// <summary>destination[i] = (float)source[i].</summary>
    private static void StoreDoubleKernel(Index1D i, ArrayView<double> source, ArrayView<float> destination) => destination[i] = (float)source[i];

    /// <summary>partials[p] = sum over i = p, p + P, p + 2P, ... of x[i]^2, in double (P = partials.Length).</summary>
    private static void SumOfSquaresPartialsKernel(Index1D p, ArrayView<float> x, ArrayView<double> partials)
    {
        var sum = 0.0;
        for (long i = p.X; i < x.Length; i += partials.Length)
        {
            double value = x[i];
            sum += value * value;
        }
        partials[p] = sum;
    }

    /// <inheritdoc/>
    protected override void FillCore(BufferView x, float value)
    {
        if (x.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _fill, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>, float>(FillKernel, group));
            Launch(nameof(Fill), () => kernel(x.Length, View(x), value));
        }
    }

    /// <summary>
    /// Zeroes the input gradient of a backward op that is to overwrite it (accumulate false), for the
    /// kernels that only accumulate: a fill and then +=, which keeps one kernel per op.
    /// </summary>
    private void ZeroIfOverwriting(BufferView? inputGrad, bool accumulate)
    {
        if (!accumulate && inputGrad is { } gradient) FillCore(gradient, 0f);
    }

    /// <inheritdoc/>
    protected override void CopyCore(BufferView source, BufferView destination)
    {
        if (source.Length == 0 || source == destination) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _copy, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(CopyKernel, group));
            Launch(nameof(Copy), () => kernel(source.Length, View(source), View(destination)));
        }
    }

    /// <inheritdoc/>
    protected override void ScaleCore(float alpha, BufferView x)
    {
        if (x.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _scale, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>, float>(ScaleKernel, group));
            Launch(nameof(Scale), () => kernel(x.Length, View(x), alpha));
        }
    }

    /// <inheritdoc/>
    protected override void AxpyCore(float alpha, BufferView x, BufferView y)
    {
        if (x.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _axpy, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, float, ArrayView<float>, ArrayView<float>>(AxpyKernel, group));
            Launch(nameof(Axpy), () => kernel(x.Length, alpha, View(x), View(y)));
        }
    }

    /// <inheritdoc/>
    protected override void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        var length = destination.Length;
        if (length == 0) return;
        lock (_gate)
        {
            var accumulate = ElementKernel(ref _accumulateWeighted,
                (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, float, ArrayView<float>, ArrayView<double>, int>(AccumulateWeightedKernel, group));
            var store = ElementKernel(ref _storeDouble, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<double>, ArrayView<float>>(StoreDoubleKernel, group));
            var sum = DoubleScratch(length);
            // The sum lives in scratch until every source is read, so the destination may be one of them.
            for (var k = 0; k < sources.Length; k++)
            {
                var (weight, source, first) = (weights[k], View(sources[k]), k == 0 ? 1 : 0);
                Launch(nameof(WeightedSum), () => accumulate(length, weight, source, sum, first));
            }
            if (sources.Length == 0) FillCore(destination, 0f);
            else Launch(nameof(WeightedSum), () => store(length, sum, View(destination)));
        }
    }

    /// <inheritdoc/>
    protected override double SumOfSquaresCore(BufferView x)
    {
        if (x.Length == 0) return 0;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _sumOfSquaresPartials,
                (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<double>>(SumOfSquaresPartialsKernel, group));
            var lanes = Math.Min(x.Length, SumOfSquaresLanes);
            var partials = DoubleScratch(lanes);
            Launch(nameof(SumOfSquares), () => kernel(lanes, View(x), partials));
            // The optimizer asks every step: the host copy of the partials is kept, not allocated each call.
            Launch(nameof(SumOfSquares), () =>
            {
                _accelerator.Synchronize();
                partials.CopyToCPU(_sumOfSquaresHost.AsSpan(0, lanes));
            });
            var sum = 0.0;
            foreach (var partial in _sumOfSquaresHost.AsSpan(0, lanes)) sum += partial;
            return sum;
        }
    }
}
