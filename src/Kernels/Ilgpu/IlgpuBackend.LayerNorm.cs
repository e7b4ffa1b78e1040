using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Layer normalisation over the C channels of each row, as in llm.c: one group per row for the row
// statistics and the input gradient, one thread per channel for the parameter gradients (a column
// sum over the rows, so no atomics and a fixed order).
public sealed partial class IlgpuBackend
{
    private const float LayerNormEpsilon = 1e-5f;

    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>? _layerNormForward;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>? _layerNormBackwardInput;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? _layerNormBackwardParameters;

    /// <summary>
    /// One group per row i: y[i,:] = (x[i,:] - mean_i) rstd_i w + b, with mean_i and
    /// rstd_i = 1/sqrt(var_i + 1e-5) saved. x and y are (N,C), w and b (C), mean and rstd (N).
    /// </summary>
    private static void LayerNormForwardKernel(ArrayView<float> x, ArrayView<float> w, ArrayView<float> b, ArrayView<float> y,
        ArrayView<float> mean, ArrayView<float> rstd, int c)
    {
        var scratch = SharedMemory.Allocate<float>(MaxRowGroupSize);
        var row = Grid.IdxX;
        var start = (long)row * c;
        var sum = 0f;
        for (var p = Group.IdxX; p < c; p += Group.DimX) sum += x[start + p];
        var m = GroupSum(scratch, sum) / c;
        var squares = 0f;
        for (var p = Group.IdxX; p < c; p += Group.DimX)
        {
            var d = x[start + p] - m;
            squares += d * d;
        }
        var s = 1f / XMath.Sqrt(GroupSum(scratch, squares) / c + LayerNormEpsilon);
        for (var p = Group.IdxX; p < c; p += Group.DimX) y[start + p] = (x[start + p] - m) * s * w[p] + b[p];
        if (Group.IsFirstThread)
        {
            mean[row] = m;
            rstd[row] = s;
        }
    }

    /// <summary>
    /// One group per row i: with norm = (x - mean) rstd and dnorm = w dy,
    /// dx += rstd (dnorm - mean(dnorm) - norm mean(dnorm norm)). dy, x and dx are (N,C), w (C), mean and rstd (N).
    /// </summary>
    private static void LayerNormBackwardInputKernel(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> w,
        ArrayView<float> mean, ArrayView<float> rstd, ArrayView<float> dx, int c)
    {
        var scratch = SharedMemory.Allocate<float>(MaxRowGroupSize);
        var row = Grid.IdxX;
        var start = (long)row * c;
        var m = mean[row];
        var s = rstd[row];
        var dnormSum = 0f;
        var dnormNormSum = 0f;
        for (var p = Group.IdxX; p < c; p += Group.DimX)
        {
            var norm = (x[start + p] - m) * s;
            var dnorm = w[p] * dy[start + p];
            dnormSum += dnorm;
            dnormNormSum += dnorm * norm;
        }
        var dnormMean = GroupSum(scratch, dnormSum) / c;
        var dnormNormMean = GroupSum(scratch, dnormNormSum) / c;
        for (var p = Group.IdxX; p < c; p += Group.DimX)
        {
            var norm = (x[start + p] - m) * s;
            var dnorm = w[p] * dy[start + p];
            dx[start + p] += s * (dnorm - dnormMean - norm * dnormNormMean);
        }
    }

    /// <summary>
    /// One thread per channel p, over the N rows: dw[p] += sum_i norm[i,p] dy[i,p] (when flags bit 0);
    /// db[p] += sum_i dy[i,p] (when flags bit 1). dy and x are (N,C), mean and rstd (N), dw and db (C).
    /// </summary>
    private static void LayerNormBackwardParametersKernel(Index1D p, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> mean,
        ArrayView<float> rstd, ArrayView<float> dw, ArrayView<float> db, int n, int c, int flags)
    {
        var dwSum = 0f;
        var dbSum = 0f;
        for (var i = 0; i < n; i++)
        {
            var at = (long)i * c + p;
            var g = dy[at];
            dwSum += (x[at] - mean[i]) * rstd[i] * g;
            dbSum += g;
        }
        if ((flags & 1) != 0) dw[p] += dwSum;
        if ((flags & 2) != 0) db[p] += dbSum;
    }

    /// <inheritdoc/>
    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias,
        BufferView output, BufferView mean, BufferView rstd)
    {
        if (n == 0) return;
        lock (_gate)
        {
            var kernel = Kernel(ref _layerNormForward, a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(LayerNormForwardKernel));
            Launch(nameof(LayerNormForward), () => kernel(RowLaunch(n), View(input), View(weight), View(bias), View(output), View(mean), View(rstd), c));
        }
    }

    /// <inheritdoc/>
    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        if (n == 0 || c == 0) return;
        lock (_gate)
        {
            var inputKernel = Kernel(ref _layerNormBackwardInput, a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(LayerNormBackwardInputKernel));
            Launch(nameof(LayerNormBackward), () => inputKernel(RowLaunch(n), View(outputGrad), View(input), View(weight), View(mean),
                View(rstd), View(inputGrad), c));
            if (weightGrad is null && biasGrad is null) return;
            var parameterKernel = ElementKernel(ref _layerNormBackwardParameters, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(
                LayerNormBackwardParametersKernel, group));
            var flags = (weightGrad is null ? 0 : 1) | (biasGrad is null ? 0 : 2);
            Launch(nameof(LayerNormBackward), () => parameterKernel(c, View(outputGrad), View(input), View(mean), View(rstd),
                ViewOrPlaceholder(weightGrad), ViewOrPlaceholder(biasGrad), n, c, flags));
        }
    }
}
