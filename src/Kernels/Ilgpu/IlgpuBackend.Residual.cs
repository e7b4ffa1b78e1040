using ILGPU;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Residual connection: y = a + b, and its backward pass, one thread per element.
public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>? _residualForward;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>? _residualBackward;

    /// <summary>y[i] = a[i] + b[i]. a, b and y are (L).</summary>
    private static void ResidualForwardKernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];

    /// <summary>da[i] += dy[i]; db[i] += dy[i]. dy, da and db are (L).</summary>
    private static void ResidualBackwardKernel(Index1D i, ArrayView<float> dy, ArrayView<float> da, ArrayView<float> db)
    {
        var g = dy[i];
        da[i] += g;
        db[i] += g;
    }

    /// <inheritdoc/>
    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output)
    {
        if (a.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _residualForward, (acc, group) =>
                acc.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ResidualForwardKernel, group));
            Launch(nameof(ResidualForward), () => kernel(a.Length, View(a), View(b), View(output)));
        }
    }

    /// <inheritdoc/>
    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        if (outputGrad.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _residualBackward, (acc, group) =>
                acc.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ResidualBackwardKernel, group));
            Launch(nameof(ResidualBackward), () => kernel(outputGrad.Length, View(outputGrad), View(aGrad), View(bGrad)));
        }
    }
}
