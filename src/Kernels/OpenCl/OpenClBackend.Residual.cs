namespace FedLora.Kernels.OpenCl;

// Residual add (Residual.cl): element-wise.
public sealed partial class OpenClBackend
{
    private ResidualKernels? _residual;

    private ResidualKernels Residual => _residual ??= new ResidualKernels(BuildProgram("Residual"));

    /// <inheritdoc/>
    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output)
    {
        lock (_gate) Run(Residual.Forward, a.Length, a.Length, a, b, output);
    }

    /// <inheritdoc/>
    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        lock (_gate) Run(Residual.Backward, outputGrad.Length, outputGrad.Length, outputGrad, aGrad, bGrad);
    }

    private sealed class ResidualKernels(OpenClProgram program)
    {
        public OpenClKernel Forward { get; } = program.Kernel("residual_forward");
        public OpenClKernel Backward { get; } = program.Kernel("residual_backward");
    }
}
