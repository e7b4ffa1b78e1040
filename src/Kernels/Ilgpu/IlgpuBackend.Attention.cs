using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Causal multi-head self-attention, as in llm.c. qkv is (B,T,3C): head h of batch row b reads q_i, k_j
// and v_j at (b T + i) 3C + h hs, + C and + 2C. att and the backward scratch are (B,NH,T,T); row
// r = (b NH + h) T + i holds query i's scores.
//   forward   one group per row: s_j = q_i . k_j / sqrt(hs) for j <= i, causal softmax into att (0 above
//             the diagonal); then one thread per output element: y_i = sum_j att[i,j] v_j;
//   backward  one group per row: dS[i,j] = att[i,j] (dy_i . v_j - sum_l att[i,l] dy_i . v_l) / sqrt(hs)
//             into scratch; then one thread per element of dqkv, which sums everything it receives:
//             dq_i = sum_{j<=i} dS[i,j] k_j, dk_j = sum_{i>=j} dS[i,j] q_i, dv_j = sum_{i>=j} att[i,j] dy_i.
// Every element is written by one thread in a fixed order: no atomics, and overwriting (accumulate
// false) needs no cleared buffer.
public sealed partial class IlgpuBackend
{
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int, float>? _attentionSoftmax;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>? _attentionValues;
    private Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, float>? _attentionSoftmaxBackward;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>? _attentionInputGrad;

    /// <summary>
    /// One group per row r = (b NH + h) T + i: att[r,j] = softmax_{j' &lt;= i}(q_i . k_j' scale)_j for
    /// j &lt;= i, 0 above the diagonal. qkv is (B,T,3C), att (B,NH,T,T).
    /// </summary>
    private static void AttentionSoftmaxKernel(ArrayView<float> qkv, ArrayView<float> att, int t, int c, int heads, float scale)
    {
        var scratch = SharedMemory.Allocate<float>(MaxRowGroupSize);
        var row = Grid.IdxX;
        var (b, h, i) = (row / t / heads, row / t % heads, row % t);
        var hs = c / heads;
        var q = ((long)b * t + i) * 3 * c + h * hs;
        var a = (long)row * t;
        var localMax = float.NegativeInfinity;
        for (var j = Group.IdxX; j <= i; j += Group.DimX)
        {
            var k = ((long)b * t + j) * 3 * c + c + h * hs;
            var dot = 0f;
            for (var d = 0; d < hs; d++) dot += qkv[q + d] * qkv[k + d];
            var score = dot * scale;
            att[a + j] = score;
            localMax = XMath.Max(localMax, score);
        }
        var max = GroupMax(scratch, localMax);
        var localSum = 0f;
        for (var j = Group.IdxX; j <= i; j += Group.DimX)
        {
            var e = XMath.Exp(att[a + j] - max);
            att[a + j] = e;
            localSum += e;
        }
        var inverse = 1f / GroupSum(scratch, localSum);
        for (var j = Group.IdxX; j < t; j += Group.DimX) att[a + j] = j <= i ? att[a + j] * inverse : 0f;
    }

    /// <summary>
    /// One thread per element (b, i, h hs + d) of y: y[b,i,h hs + d] = sum_{j &lt;= i} att[(b NH + h) T + i, j] v_j[d].
    /// qkv is (B,T,3C), att (B,NH,T,T), y (B,T,C).
    /// </summary>
    private static void AttentionValuesKernel(Index1D e, ArrayView<float> qkv, ArrayView<float> att, ArrayView<float> y, int t, int c, int heads)
    {
        var hs = c / heads;
        var (bt, column) = (e.X / c, e.X % c);
        var (b, i, h, d) = (bt / t, bt % t, column / hs, column % hs);
        var a = ((long)(b * heads + h) * t + i) * t;
        var v = (long)b * t * 3 * c + 2 * c + h * hs + d;
        var sum = 0f;
        for (var j = 0; j <= i; j++) sum += att[a + j] * qkv[v + (long)j * 3 * c];
        y[e] = sum;
    }

    /// <summary>
    /// One group per row r = (b NH + h) T + i: dS[r,j] = att[r,j] (dy_i . v_j - sum_{l &lt;= i} att[r,l] dy_i . v_l) scale
    /// for j &lt;= i (the entries above the diagonal are not written). qkv is (B,T,3C), att and dS (B,NH,T,T), dy (B,T,C).
    /// </summary>
    private static void AttentionSoftmaxBackwardKernel(ArrayView<float> qkv, ArrayView<float> att, ArrayView<float> dy, ArrayView<float> dS,
        int t, int c, int heads, float scale)
    {
        var scratch = SharedMemory.Allocate<float>(MaxRowGroupSize);
        var row = Grid.IdxX;
        var (b, h, i) = (row / t / heads, row / t % heads, row % t);
        var hs = c / heads;
        var g = ((long)b * t + i) * c + h * hs;
        var a = (long)row * t;
        var localWeighted = 0f;
        for (var j = Group.IdxX; j <= i; j += Group.DimX)
        {
            var v = ((long)b * t + j) * 3 * c + 2 * c + h * hs;
            var dot = 0f;
            for (var d = 0; d < hs; d++) dot += dy[g + d] * qkv[v + d];
            dS[a + j] = dot;
            localWeighted += att[a + j] * dot;
        }
        var weighted = GroupSum(scratch, localWeighted);
        for (var j = Group.IdxX; j <= i; j += Group.DimX) dS[a + j] = att[a + j] * (dS[a + j] - weighted) * scale;
    }

    /// <summary>
    /// One thread per element (b, s, part C + h hs + d) of dqkv, which it sets to (accumulate ? dqkv : 0) plus:
    /// for q (part 0) sum_{j &lt;= s} dS[s,j] k_j[d]; for k (part 1) sum_{i &gt;= s} dS[i,s] q_i[d]; for v (part 2)
    /// sum_{i &gt;= s} att[i,s] dy_i[d], with the rows of head (b, h). qkv and dqkv are (B,T,3C), att and dS
    /// (B,NH,T,T), dy (B,T,C).
    /// </summary>
    private static void AttentionInputGradKernel(Index1D e, ArrayView<float> qkv, ArrayView<float> att, ArrayView<float> dy,
        ArrayView<float> dS, ArrayView<float> dqkv, int t, int c, int heads, int accumulate)
    {
        var hs = c / heads;
        var (bs, within) = (e.X / (3 * c), e.X % (3 * c));
        var (b, s, part, h, d) = (bs / t, bs % t, within / c, within % c / hs, within % c % hs);
        var rows = (long)(b * heads + h) * t * t;
        var stride = 3L * c;
        var batch = (long)b * t;
        var sum = 0f;
        if (part == 0)
        {
            var k = batch * stride + c + h * hs + d;
            for (var j = 0; j <= s; j++) sum += dS[rows + (long)s * t + j] * qkv[k + j * stride];
        }
        else if (part == 1)
        {
            var q = batch * stride + h * hs + d;
            for (var i = s; i < t; i++) sum += dS[rows + (long)i * t + s] * qkv[q + i * stride];
        }
        else
        {
            var g = batch * c + h * hs + d;
            for (var i = s; i < t; i++) sum += att[rows + (long)i * t + s] * dy[g + (long)i * c];
        }
        dqkv[e] = accumulate != 0 ? dqkv[e] + sum : sum;
    }

    /// <inheritdoc/>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        var rows = b * heads * t;
        if (rows == 0) return;
        lock (_gate)
        {
            var softmax = Kernel(ref _attentionSoftmax, a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int, int, float>(
                AttentionSoftmaxKernel));
            var scale = 1f / MathF.Sqrt(c / heads);
            Launch(nameof(AttentionForward), () => softmax(RowLaunch(rows), View(input), View(attention), t, c, heads, scale));
            if (c == 0) return;
            var values = ElementKernel(ref _attentionValues, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, int, int, int>(AttentionValuesKernel, group));
            Launch(nameof(AttentionForward), () => values(b * t * c, View(input), View(attention), View(output), t, c, heads));
        }
    }

    /// <inheritdoc/>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        var rows = b * heads * t;
        if (rows == 0 || c == 0) return;
        lock (_gate)
        {
            var softmax = Kernel(ref _attentionSoftmaxBackward, a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
                ArrayView<float>, int, int, int, float>(AttentionSoftmaxBackwardKernel));
            var inputGradKernel = ElementKernel(ref _attentionInputGrad, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(AttentionInputGradKernel, group));
            var scores = FloatScratch(attention.Length);
            var scale = 1f / MathF.Sqrt(c / heads);
            var flag = accumulate ? 1 : 0;
            Launch(nameof(AttentionBackward), () => softmax(RowLaunch(rows), View(input), View(attention), View(outputGrad), scores, t, c, heads, scale));
            Launch(nameof(AttentionBackward), () => inputGradKernel(b * t * 3 * c, View(input), View(attention), View(outputGrad), scores,
                View(inputGrad), t, c, heads, flag));
        }
    }
}
