namespace FedLora.Kernels.OpenCl;

// Causal multi-head attention (Attention.cl with the Matmul family's GEMMs). Head h of batch row b
// sees q, k, v as (T,hs) views of qkv with row stride 3C, so every per-head product is one batched
// GEMM over the B*NH heads:
//   forward   S = Q K^T / sqrt(hs) into att, causal softmax per row, Y = P V into y (row stride C);
//   backward  dP = dY V^T into scratch, softmax backward per row (dS, scale included),
//             dQ += dS K, dK += dS^T Q, dV += P^T dY.
// The GEMMs also compute the zero upper triangle (P and dS are 0 there): twice the causal flops, at
// GEMM speed, where a per-row kernel ran at 1-2 GFLOP/s on PoCL.
public sealed partial class OpenClBackend
{
    private AttentionKernels? _attention;

    private AttentionKernels Attention => _attention ??= new AttentionKernels(BuildProgram("Attention"));

    /// <inheritdoc/>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        if (b * heads * t == 0) return;
        lock (_gate)
        {
            var kernels = Attention;
            var hs = c / heads;
            var (q, k, v) = HeadViews(input, c);
            // Per head (b, h): Q, K, V start at b T 3C + h hs; att at (b NH + h) T T; y at b T C + h hs.
            var scores = new GemmBatch(b * heads, heads, t * 3 * c, hs, t * 3 * c, hs, heads * t * t, t * t);
            Gemm(GemmLayout.Nt, t, t, hs, 1f / MathF.Sqrt(hs), q, 3 * c, k, 3 * c, attention, t, Placeholder, 0, scores);
            var group = RowGroupSize(kernels.Softmax);
            RunGroups(kernels.Softmax, b * heads * t, group, t, attention, KernelArg.Local(group * sizeof(float)));
            var values = new GemmBatch(b * heads, heads, heads * t * t, t * t, t * 3 * c, hs, t * c, hs);
            Gemm(GemmLayout.Nn, t, hs, t, 1f, attention, t, v, 3 * c, output, c, Placeholder, 0, values);
        }
    }

    /// <inheritdoc/>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        ZeroIfOverwriting(inputGrad, accumulate);
        if (b * heads * t == 0 || c == 0) return;
        lock (_gate)
        {
            var kernels = Attention;
            var hs = c / heads;
            var (q, k, v) = HeadViews(input, c);
            var (dq, dk, dv) = HeadViews(inputGrad, c);
            var scores = KernelArg.Memory(_floatScratch.Reserve(attention.Length), 0);
            // dP = dY V^T, per head: dY at b T C + h hs (row stride C), dP like att.
            var dP = new GemmBatch(b * heads, heads, t * c, hs, t * 3 * c, hs, heads * t * t, t * t);
            Gemm(GemmLayout.Nt, t, t, hs, 1f, outputGrad, c, v, 3 * c, scores, t, Placeholder, 0, dP);
            var group = RowGroupSize(kernels.SoftmaxBackward);
            RunGroups(kernels.SoftmaxBackward, b * heads * t, group, t, 1f / MathF.Sqrt(hs), attention, scores,
                KernelArg.Local(group * sizeof(float)));
            // dQ += dS K and dK += dS^T Q (both (T,hs), row stride 3C); dV += P^T dY.
            var fromScores = new GemmBatch(b * heads, heads, heads * t * t, t * t, t * 3 * c, hs, t * 3 * c, hs);
            Gemm(GemmLayout.Nn, t, hs, t, 1f, scores, t, k, 3 * c, dq, 3 * c, Placeholder, GemmAccumulate, fromScores);
            Gemm(GemmLayout.Tn, t, hs, t, 1f, scores, t, q, 3 * c, dk, 3 * c, Placeholder, GemmAccumulate, fromScores);
            var fromOutput = new GemmBatch(b * heads, heads, heads * t * t, t * t, t * c, hs, t * 3 * c, hs);
            Gemm(GemmLayout.Tn, t, hs, t, 1f, attention, t, outputGrad, c, dv, 3 * c, Placeholder, GemmAccumulate, fromOutput);
        }
    }

    /// <summary>The q, k and v thirds of a (B,T,3C) view: the same buffer at offsets 0, C and 2C.</summary>
    private static (KernelArg Q, KernelArg K, KernelArg V) HeadViews(BufferView qkv, int c)
    {
        var memory = Memory(qkv);
        return (KernelArg.Memory(memory, qkv.Offset), KernelArg.Memory(memory, qkv.Offset + c), KernelArg.Memory(memory, qkv.Offset + 2 * c));
    }

    private sealed class AttentionKernels(OpenClProgram program)
    {
        public OpenClKernel Softmax { get; } = program.Kernel("attention_softmax");
        public OpenClKernel SoftmaxBackward { get; } = program.Kernel("attention_softmax_backward");
    }
}
