using static FedLora.Kernels.OpenCl.Native.NativeMethods;

namespace FedLora.Kernels.OpenCl;

// Vector ops (Vector.cl): fill and copy through the runtime's own commands, the rest as kernels.
public sealed partial class OpenClBackend
{
    /// <summary>Work-groups of the first SumOfSquares pass; fixed so that the result is deterministic.</summary>
    private const int SumOfSquaresGroups = 64;

    private VectorKernels? _vector;

    private VectorKernels Vector => _vector ??= new VectorKernels(
        BuildProgram("Vector", _hasFp64 ? "-D FEDLORA_FP64" : "", OpenClProgram.Source("Vector")), _context, _hasFp64);

    /// <inheritdoc/>
    protected override unsafe void FillCore(BufferView x, float value)
    {
        if (x.Length == 0) return;
        lock (_gate)
        {
            Check(clEnqueueFillBuffer(Queue, Memory(x), &value, sizeof(float), Bytes(x.Offset), Bytes(x.Length), 0, null, null),
                nameof(clEnqueueFillBuffer));
        }
    }

    /// <summary>
    /// Zeroes the input gradient of a backward op that is to overwrite it (accumulate false), for the
    /// ops whose kernels only accumulate (GELU, attention, cross-entropy): a fill and then +=, the
    /// simplest correct form, which keeps one kernel per op. The matmul GEMMs write directly.
    /// </summary>
    private void ZeroIfOverwriting(BufferView? inputGrad, bool accumulate)
    {
        if (!accumulate && inputGrad is { } gradient) FillCore(gradient, 0f);
    }

    /// <inheritdoc/>
    protected override unsafe void CopyCore(BufferView source, BufferView destination)
    {
        if (source.Length == 0 || source == destination) return;
        lock (_gate)
        {
            Check(clEnqueueCopyBuffer(Queue, Memory(source), Memory(destination), Bytes(source.Offset), Bytes(destination.Offset),
                Bytes(source.Length), 0, null, null), nameof(clEnqueueCopyBuffer));
        }
    }

    /// <inheritdoc/>
    protected override void ScaleCore(float alpha, BufferView x)
    {
        lock (_gate) Run(Vector.Scale, x.Length, x.Length, alpha, x);
    }

    /// <inheritdoc/>
    protected override void AxpyCore(float alpha, BufferView x, BufferView y)
    {
        lock (_gate) Run(Vector.Axpy, x.Length, x.Length, alpha, x, y);
    }

    /// <inheritdoc/>
    protected override void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        var n = destination.Length;
        if (n == 0) return;
        lock (_gate)
        {
            if (sources.IsEmpty)
            {
                Run(Vector.WeightedSum8, n, n, 0, 0, Placeholder, 0f, Placeholder, 0f, Placeholder, 0f, Placeholder, 0f,
                    Placeholder, 0f, Placeholder, 0f, Placeholder, 0f, Placeholder, 0f, destination);
                return;
            }
            // Eight sources per launch; later launches accumulate onto the destination.
            Span<KernelArg> args = stackalloc KernelArg[3 + 8 * 2 + 1];
            for (var first = 0; first < sources.Length; first += 8)
            {
                var count = Math.Min(8, sources.Length - first);
                args[0] = n;
                args[1] = count;
                args[2] = first > 0 ? 1 : 0;
                for (var s = 0; s < 8; s++)
                {
                    args[3 + 2 * s] = s < count ? sources[first + s] : Placeholder;
                    args[4 + 2 * s] = s < count ? weights[first + s] : 0f;
                }
                args[19] = destination;
                Run(Vector.WeightedSum8, n, args);
            }
        }
    }

    /// <inheritdoc/>
    protected override unsafe double SumOfSquaresCore(BufferView x)
    {
        if (x.Length == 0) return 0;
        lock (_gate)
        {
            var kernels = Vector;
            var local = kernels.SumOfSquaresPartial.PowerOfTwoGroup(GroupCap);
            var accumulatorBytes = kernels.AccumulatorBytes;
            RunGroups(kernels.SumOfSquaresPartial, SumOfSquaresGroups, local,
                x.Length, x, KernelArg.Memory(kernels.Partials), KernelArg.Local(local * accumulatorBytes));
            // The partials are summed here, in double and in group order.
            var partials = stackalloc double[SumOfSquaresGroups];
            var singles = stackalloc float[SumOfSquaresGroups];
            void* target = accumulatorBytes == sizeof(double) ? partials : singles;
            Check(clEnqueueReadBuffer(Queue, kernels.Partials, CL_TRUE, 0, (nuint)(SumOfSquaresGroups * accumulatorBytes), target, 0, null, null),
                nameof(clEnqueueReadBuffer));
            double sum = 0;
            for (var g = 0; g < SumOfSquaresGroups; g++) sum += accumulatorBytes == sizeof(double) ? partials[g] : singles[g];
            return sum;
        }
    }

    private sealed class VectorKernels(OpenClProgram program, nint context, bool fp64)
    {
        public OpenClKernel Scale { get; } = program.Kernel("scale");
        public OpenClKernel Axpy { get; } = program.Kernel("axpy");
        public OpenClKernel WeightedSum8 { get; } = program.Kernel("weighted_sum8");
        public OpenClKernel SumOfSquaresPartial { get; } = program.Kernel("sum_of_squares_partial");

        /// <summary>Size of the reduction's accumulator: double when the device has cl_khr_fp64, else float.</summary>
        public int AccumulatorBytes { get; } = fp64 ? sizeof(double) : sizeof(float);

        /// <summary>The per-group partial sums (released with the backend's programs: see Dispose).</summary>
        public nint Partials { get; } = program.Own(CreateMemory(context, SumOfSquaresGroups * sizeof(double)));
    }
}
