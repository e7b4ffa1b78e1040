namespace FedLora.Kernels.OpenCl;

// Layer normalisation (LayerNorm.cl): one work-group per row for the row statistics, one work-item
// per channel for the parameter gradients (a column sum over rows, so no atomics).
public sealed partial class OpenClBackend
{
    private LayerNormKernels? _layerNorm;

    private LayerNormKernels LayerNorm => _layerNorm ??= new LayerNormKernels(BuildProgram("LayerNorm"));

    /// <inheritdoc/>
    protected override void LayerNormForwardCore(int n, int c, BufferView input, BufferView weight, BufferView bias,
        BufferView output, BufferView mean, BufferView rstd)
    {
        lock (_gate)
        {
            var kernel = LayerNorm.Forward;
            var group = RowGroupSize(kernel);
            RunGroups(kernel, n, group, c, input, weight, bias, output, mean, rstd, KernelArg.Local(group * sizeof(float)));
        }
    }

    /// <inheritdoc/>
    protected override void LayerNormBackwardCore(int n, int c, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView mean, BufferView rstd, BufferView inputGrad, BufferView? weightGrad, BufferView? biasGrad)
    {
        lock (_gate)
        {
            var kernels = LayerNorm;
            var group = RowGroupSize(kernels.BackwardInput);
            RunGroups(kernels.BackwardInput, n, group, c, outputGrad, input, weight, mean, rstd, inputGrad,
                KernelArg.Local(group * sizeof(float)));
            if (weightGrad is null && biasGrad is null) return;
            var flags = (weightGrad is null ? 0 : 1) | (biasGrad is null ? 0 : 2);
            Run(kernels.BackwardParameters, c, n, c, outputGrad, input, mean, rstd, Optional(weightGrad), Optional(biasGrad), flags);
        }
    }

    private sealed class LayerNormKernels(OpenClProgram program)
    {
        public OpenClKernel Forward { get; } = program.Kernel("layernorm_forward");
        public OpenClKernel BackwardInput { get; } = program.Kernel("layernorm_backward_input");
        public OpenClKernel BackwardParameters { get; } = program.Kernel("layernorm_backward_parameters");
    }
}
