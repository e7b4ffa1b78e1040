using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Softmax cross-entropy over V logits per row: one group per row forward, one thread per logit backward.
// Targets are copied into the int scratch first; a target of -1 marks a position the loss ignores.
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int>? _crossEntropyForward;
    private Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, float, int, int>? _crossEntropyBackward;

    /// <summary>
    /// One group per row i: probs[i,:] = softmax(z[i,:]); loss[i] = -log probs[i,target_i], or 0 when
    /// target_i = -1. z and probs are (N,V), targets and loss (N).
    /// </summary>
    private static void CrossEntropyForwardKernel(ArrayView<float> z, ArrayView<int> targets, ArrayView<float> probs, ArrayView<float> loss, int v)
    {
        var scratch = SharedMemory.Allocate<float>(MaxRowGroupSize);
        var row = Grid.IdxX;
        var start = (long)row * v;
        var localMax = float.NegativeInfinity;
        for (var j = Group.IdxX; j < v; j += Group.DimX) localMax = XMath.Max(localMax, z[start + j]);
        var max = GroupMax(scratch, localMax);
        var localSum = 0f;
        for (var j = Group.IdxX; j < v; j += Group.DimX) localSum += XMath.Exp(z[start + j] - max);
        var sum = GroupSum(scratch, localSum);
        var inverse = 1f / sum;
        for (var j = Group.IdxX; j < v; j += Group.DimX) probs[start + j] = XMath.Exp(z[start + j] - max) * inverse;
        if (Group.IsFirstThread)
        {
            var target = targets[row];
            loss[row] = target < 0 ? 0f : XMath.Log(sum) + max - z[start + target];
        }
    }

    /// <summary>
    /// One thread per element (i, j) of the (N,V) grid: dz[i,j] = (accumulate ? dz[i,j] : 0) + scale (probs[i,j] - [j == target_i])
    /// for rows whose target is not -1; those rows are left alone when accumulating, set to 0 otherwise.
    /// probs and dz are (N,V), targets (N).
    /// </summary>
    private static void CrossEntropyBackwardKernel(Index1D e, ArrayView<float> probs, ArrayView<int> targets, ArrayView<float> dz,
        float scale, int v, int accumulate)
    {
        var target = targets[e.X / v];
        var previous = accumulate != 0 ? dz[e] : 0f;
        if (target < 0)
        {
            if (accumulate == 0) dz[e] = 0f;
            return;
        }
        var indicator = e.X % v == target ? 1f : 0f;
        dz[e] = previous + scale * (probs[e] - indicator);
    }

    /// <inheritdoc/>
    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets,
        BufferView probabilities, BufferView losses)
    {
        if (n == 0) return;
        lock (_gate)
        {
            var kernel = Kernel(ref _crossEntropyForward, a => a.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>,
                ArrayView<float>, int>(CrossEntropyForwardKernel));
            var ids = UploadInts(targets);
            Launch(nameof(CrossEntropyForward), () => kernel(RowLaunch(n), View(logits), ids, View(probabilities), View(losses), vocab));
        }
    }

    /// <inheritdoc/>
    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets,
        float lossScale, BufferView logitsGrad, bool accumulate)
    {
        if (n == 0 || vocab == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _crossEntropyBackward, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>,
                ArrayView<int>, ArrayView<float>, float, int, int>(CrossEntropyBackwardKernel, group));
            var ids = UploadInts(targets);
            var flag = accumulate ? 1 : 0;
            Launch(nameof(CrossEntropyBackward), () => kernel(n * vocab, View(probabilities), ids, View(logitsGrad), lossScale, vocab, flag));
        }
    }
}
