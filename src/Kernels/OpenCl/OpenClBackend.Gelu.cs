namespace FedLora.Kernels.OpenCl;

// GELU, tanh approximation (Gelu.cl): element-wise.
public sealed partial class OpenClBackend
{
    private GeluKernels? _gelu;

    private GeluKernels Gelu => _gelu ??= new GeluKernels(BuildProgram("Gelu"));

    /// <inheritdoc/>
    protected override void GeluForwardCore(BufferView input, BufferView output)
    {
        lock (_gate) Run(Gelu.Forward, input.Length, input.Length, input, output);
    }

    /// <inheritdoc/>
    protected override void GeluBackwardCore(BufferView input, BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        ZeroIfOverwriting(inputGrad, accumulate);
        lock (_gate) Run(Gelu.Backward, input.Length, input.Length, input, outputGrad, inputGrad);
    }

    private sealed class GeluKernels(OpenClProgram program)
    {
        public OpenClKernel Forward { get; } = program.Kernel("gelu_forward");
        public OpenClKernel Backward { get; } = program.Kernel("gelu_backward");
    }
}
