namespace FedLora.Kernels.Cpu;

// Residual add: the elementwise loop with the add operator.
public unsafe partial class CpuBackend
{
    /// <summary>output = a + b. All three are (L).</summary>
    protected override void ResidualForwardCore(BufferView a, BufferView b, BufferView output) =>
        Simd.Map(default(AddOperator), Simd.Address(a), Simd.Address(b), null, Simd.Address(output), a.Length);

    /// <summary>aGrad += outputGrad; bGrad += outputGrad. All three are (L).</summary>
    protected override void ResidualBackwardCore(BufferView outputGrad, BufferView aGrad, BufferView bGrad)
    {
        var job = new ResidualBackwardJob(Simd.Address(outputGrad), Simd.Address(aGrad), Simd.Address(bGrad), outputGrad.Length);
        CpuParallel.For(Simd.ChunkCount(outputGrad.Length), ref job);
    }

    // Both gradients per chunk, so that the chunk of outputGrad is read from L1 the second time.
    private readonly struct ResidualBackwardJob(float* outputGrad, float* aGrad, float* bGrad, int length) : IParallelJob
    {
        public void Execute(int index)
        {
            var start = index * Simd.ChunkLength;
            var n = Math.Min(Simd.ChunkLength, length - start);
            Simd.MapRange(default(AddOperator), outputGrad + start, aGrad + start, null, aGrad + start, n);
            Simd.MapRange(default(AddOperator), outputGrad + start, bGrad + start, null, bGrad + start, n);
        }
    }
}
