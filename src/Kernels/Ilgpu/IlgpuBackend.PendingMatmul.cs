namespace FedLora.Kernels.Ilgpu;

// TEMPORARY while the ILGPU backend is being written: the ops below are not ported yet. This file is
// deleted as its ops move to their family files; it must not reach main.
public sealed partial class IlgpuBackend
{
    /// <inheritdoc/>
    protected override void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output) =>
        throw new NotSupportedException("MatmulForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate) =>
        throw new NotSupportedException("MatmulBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output) =>
        throw new NotSupportedException("LowRankMatmulForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input, BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate) =>
        throw new NotSupportedException("LowRankMatmulBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient, BufferView subA, BufferView subB, BufferView loraA, BufferView loraB) =>
        throw new NotSupportedException("MaskedSketchUpdate is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA, ReadOnlySpan<float> rowWeights, BufferView weight) =>
        throw new NotSupportedException("StackedAggregation is not implemented on ILGPU yet");
}
