namespace FedLora.Kernels.OpenCl;

// Softmax cross-entropy (CrossEntropy.cl): one work-group per row forward, element-wise backward.
// Targets are copied into the int scratch first.
public sealed partial class OpenClBackend
{
    private CrossEntropyKernels? _crossEntropy;

    private CrossEntropyKernels CrossEntropy => _crossEntropy ??= new CrossEntropyKernels(BuildProgram("CrossEntropy"));

    /// <inheritdoc/>
    protected override void CrossEntropyForwardCore(int n, int vocab, BufferView logits, ReadOnlySpan<int> targets,
        BufferView probabilities, BufferView losses)
    {
        if (n == 0) return;
        lock (_gate)
        {
            var kernel = CrossEntropy.Forward;
            var group = RowGroupSize(kernel);
            var targetIds = UploadInts(targets);
            RunGroups(kernel, n, group, vocab, logits, targetIds, probabilities, losses, KernelArg.Local(group * sizeof(float)));
        }
    }

    /// <inheritdoc/>
    protected override void CrossEntropyBackwardCore(int n, int vocab, BufferView probabilities, ReadOnlySpan<int> targets,
        float lossScale, BufferView logitsGrad, bool accumulate)
    {
        ZeroIfOverwriting(logitsGrad, accumulate);
        if (n == 0 || vocab == 0) return;
        lock (_gate)
        {
            var kernel = CrossEntropy.Backward;
            var targetIds = UploadInts(targets);
            Run(kernel, n * vocab, n, vocab, probabilities, targetIds, lossScale, logitsGrad);
        }
    }

    private sealed class CrossEntropyKernels(OpenClProgram program)
    {
        public OpenClKernel Forward { get; } = program.Kernel("crossentropy_forward");
        public OpenClKernel Backward { get; } = program.Kernel("crossentropy_backward");
    }
}
