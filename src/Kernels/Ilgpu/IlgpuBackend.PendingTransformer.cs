namespace FedLora.Kernels.Ilgpu;

// TEMPORARY while the ILGPU backend is being written: the ops below are not ported yet. This file is
// deleted as its ops move to their family files; it must not reach main.
public sealed partial class IlgpuBackend
{
    /// <inheritdoc/>
    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias, BufferView output, BufferView mean, BufferView rstd) =>
        throw new NotSupportedException("LayerNormForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight, BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad) =>
        throw new NotSupportedException("LayerNormBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void GeluForwardCore(BufferView input, BufferView output) =>
        throw new NotSupportedException("GeluForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate) =>
        throw new NotSupportedException("GeluBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output) =>
        throw new NotSupportedException("ResidualForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad) =>
        throw new NotSupportedException("ResidualBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output) =>
        throw new NotSupportedException("AttentionForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView outputGrad, BufferView inputGrad, bool accumulate) =>
        throw new NotSupportedException("AttentionBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void EmbeddingForwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView tokenTable, BufferView positionTable, BufferView output) =>
        throw new NotSupportedException("EmbeddingForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void EmbeddingBackwardCore(int b, int t, int c, int vocab, ReadOnlySpan<int> tokens, BufferView outputGrad, BufferView? tokenTableGrad, BufferView? positionTableGrad) =>
        throw new NotSupportedException("EmbeddingBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets, BufferView probabilities, BufferView losses) =>
        throw new NotSupportedException("CrossEntropyForward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets, float lossScale, BufferView logitsGrad, bool accumulate) =>
        throw new NotSupportedException("CrossEntropyBackward is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask, BufferView parameters, BufferView m, BufferView v) =>
        throw new NotSupportedException("AdamW is not implemented on ILGPU yet");

    /// <inheritdoc/>
    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters) =>
        throw new NotSupportedException("Sgd is not implemented on ILGPU yet");
}
