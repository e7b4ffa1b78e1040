namespace FedLora.Kernels.OpenCl;

// AdamW and SGD (Optimizers.cl): element-wise (AdamW four elements per work-item), with an optional mask.
public sealed partial class OpenClBackend
{
    private OptimizerKernels? _optimizers;

    private OptimizerKernels Optimizers => _optimizers ??= new OptimizerKernels(BuildProgram("Optimizers"));

    /// <inheritdoc/>
    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask,
        BufferView parameters, BufferView m, BufferView v)
    {
        var n = grads.Length;
        if (n == 0) return;
        // The bias corrections are computed once here, in double.
        var correction1 = (float)(1 - Math.Pow(settings.Beta1, timestep));
        var correction2 = (float)(1 - Math.Pow(settings.Beta2, timestep));
        lock (_gate)
        {
            Run(Optimizers.AdamW, (n + 3) / 4, n, settings.LearningRate, settings.Beta1, settings.Beta2, settings.Epsilon, settings.WeightDecay,
                correction1, correction2, grads, Optional(mask), mask is null ? 0 : 1, parameters, m, v);
        }
    }

    /// <inheritdoc/>
    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        var n = grads.Length;
        if (n == 0) return;
        lock (_gate) Run(Optimizers.Sgd, n, n, learningRate, weightDecay, grads, Optional(mask), mask is null ? 0 : 1, parameters);
    }

    private sealed class OptimizerKernels(OpenClProgram program)
    {
        public OpenClKernel AdamW { get; } = program.Kernel("adamw");
        public OpenClKernel Sgd { get; } = program.Kernel("sgd");
    }
}
