namespace FedLora.Kernels.OpenCl;

// Causal multi-head attention (Attention.cl). Forward: one work-group per query row. Backward: the
// score gradients per query row into scratch (B,NH,T,T), then one work-item per (b, t, channel) sums
// its q, k and v gradients over the rows that touch it, so that no two work-items write one element.
public sealed partial class OpenClBackend
{
    private AttentionKernels? _attention;

    private AttentionKernels Attention => _attention ??= new AttentionKernels(BuildProgram("Attention"));

    /// <inheritdoc/>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        lock (_gate)
        {
            var kernel = Attention.Forward;
            var group = RowGroupSize(kernel);
            RunGroups(kernel, b * heads * t, group, t, c, heads, input, attention, output, KernelArg.Local(group * sizeof(float)));
        }
    }

    /// <inheritdoc/>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad)
    {
        if (b * heads * t == 0 || c == 0) return;
        lock (_gate)
        {
            var kernels = Attention;
            var scores = KernelArg.Memory(_floatScratch.Reserve(attention.Length), 0);
            var group = RowGroupSize(kernels.BackwardScores);
            RunGroups(kernels.BackwardScores, b * heads * t, group, t, c, heads, input, attention, outputGrad, scores,
                KernelArg.Local(group * sizeof(float)));
            Run(kernels.BackwardQkv, b * t * c, b, t, c, heads, input, attention, outputGrad, scores, inputGrad);
        }
    }

    private sealed class AttentionKernels(OpenClProgram program)
    {
        public OpenClKernel Forward { get; } = program.Kernel("attention_forward");
        public OpenClKernel BackwardScores { get; } = program.Kernel("attention_backward_scores");
        public OpenClKernel BackwardQkv { get; } = program.Kernel("attention_backward_qkv");
    }
}
