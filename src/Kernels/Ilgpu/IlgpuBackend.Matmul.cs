using ILGPU;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Matmul, low-rank (LoRA) matmul, masked sketch update and stacked aggregation: every product is one
// launch of the tiled GEMM (GemmKernel, IlgpuBackend.Gemm.cs) in one of three layouts,
//   Nt  C = A B^T   A (M,K), B stored (N,K)   forward: x W^T, x A_I^T, t B_I^T
//   Nn  C = A B     A (M,K), B stored (K,N)   dx = dy W, u = dy B_I, dx += u A_I, W += B_stack A_stack
//   Tn  C = A^T B   A stored (K,M), B (K,N)   dW = dy^T x, dB_I = dy^T t, dA_I = u^T x
// and a few element-wise helpers (bias gradient, gathers and scatters of the rank index set). The naive
// loops these must agree with are ReferenceBackend.Matmul.cs.
//
// Shapes: x is (N,C), W is (O,C), bias (O), y and dy (N,O); A is (r,C), B is (O,r), I is a rank index
// set of k entries (k = r without one), t = x A_I^T and u = dy B_I are (N,k), s is the LoRA scale.
// With I, A_I (k,C) and B_I (O,k) are gathered into scratch, their gradients computed densely there and
// scattered back; without I, A and B are the operands themselves (B_I = B with row stride r).
public sealed partial class IlgpuBackend
{
    private Action<Index1D, int, ArrayView<float>, ArrayView<float>>? _columnSumAccumulate;
    private Action<Index1D, int, ArrayView<float>, ArrayView<int>, ArrayView<float>>? _gatherRows;
    private Action<Index1D, int, int, ArrayView<float>, ArrayView<int>, ArrayView<float>>? _gatherColumns;
    private Action<Index1D, int, float, ArrayView<float>, ArrayView<int>, ArrayView<float>>? _scatterAddRows;
    private Action<Index1D, int, int, float, ArrayView<float>, ArrayView<int>, ArrayView<float>>? _scatterAddColumns;
    private Action<Index1D, int, ArrayView<float>, ArrayView<float>, ArrayView<float>>? _scaleRows;

    /// <summary>y[j] += sum_i x[i,j], one thread per column j. x is (rows, Y), y is (Y).</summary>
    private static void ColumnSumAccumulateKernel(Index1D j, int rows, ArrayView<float> x, ArrayView<float> y)
    {
        var columns = (int)y.Length;
        var sum = 0f;
        for (var i = 0; i < rows; i++) sum += x[i * columns + j];
        y[j] += sum;
    }

    /// <summary>dst[q,:] = src[I[q],:]: A_I from A. src is (r,C), dst is (k,C), one thread per element of dst.</summary>
    private static void GatherRowsKernel(Index1D e, int c, ArrayView<float> src, ArrayView<int> indices, ArrayView<float> dst) =>
        dst[e] = src[indices[e / c] * c + e % c];

    /// <summary>dst[:,q] = src[:,I[q]]: B_I from B. src is (O,r), dst is (O,k), one thread per element of dst.</summary>
    private static void GatherColumnsKernel(Index1D e, int rank, int k, ArrayView<float> src, ArrayView<int> indices, ArrayView<float> dst) =>
        dst[e] = src[e / k * rank + indices[e % k]];

    /// <summary>dst[I[q],:] += coefficient src[q,:]. src is (k,C), dst is (r,C); I is distinct, so each element has one writer.</summary>
    private static void ScatterAddRowsKernel(Index1D e, int c, float coefficient, ArrayView<float> src, ArrayView<int> indices, ArrayView<float> dst) =>
        dst[indices[e / c] * c + e % c] += coefficient * src[e];

    /// <summary>dst[:,I[q]] += coefficient src[:,q]. src is (O,k), dst is (O,r), distinct indices.</summary>
    private static void ScatterAddColumnsKernel(Index1D e, int rank, int k, float coefficient, ArrayView<float> src, ArrayView<int> indices,
        ArrayView<float> dst) =>
        dst[e / k * rank + indices[e % k]] += coefficient * src[e];

    /// <summary>dst[q,:] = w[q] src[q,:]: diag(w) A_stack. src and dst are (R,C), w is (R).</summary>
    private static void ScaleRowsKernel(Index1D e, int c, ArrayView<float> w, ArrayView<float> src, ArrayView<float> dst) =>
        dst[e] = w[e / c] * src[e];

    /// <inheritdoc/>
    protected override void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        lock (_gate)
        {
            Gemm(nameof(MatmulForward), GemmLayout.Nt, n, o, c, 1f, View(input), c, View(weight), c, View(output), o,
                bias is null ? GemmFlags.None : GemmFlags.Bias, ViewOrPlaceholder(bias));
        }
    }

    /// <inheritdoc/>
    protected override void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        lock (_gate) DenseBackward(nameof(MatmulBackward), n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// y = x W^T + bias, t = x A_I^T, then y += s t B_I^T as a second, accumulating GEMM over K = k: it
    /// re-reads y once (N O floats) against the 2 N O C flops of the base product.
    /// </remarks>
    protected override void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias,
        BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        const string op = nameof(LowRankMatmulForward);
        lock (_gate)
        {
            var (x, y, t) = (View(input), View(output), View(loraHidden));
            Gemm(op, GemmLayout.Nt, n, o, c, 1f, x, c, View(weight), c, y, o, bias is null ? GemmFlags.None : GemmFlags.Bias, ViewOrPlaceholder(bias));
            var k = rankIndices?.Length ?? rank;
            if (k == 0) return;
            var operands = ActiveRanks(op, c, o, rank, loraA, loraB, rankIndices, scratchAfter: 0);
            Gemm(op, GemmLayout.Nt, n, k, c, 1f, x, c, operands.A, c, t, k);
            Gemm(op, GemmLayout.Nt, n, o, k, scale, t, k, operands.B, operands.Ldb, y, o, GemmFlags.Accumulate);
        }
    }

    /// <inheritdoc/>
    protected override void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input,
        BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate)
    {
        const string op = nameof(LowRankMatmulBackward);
        lock (_gate)
        {
            // The dense dx GEMM writes or adds as asked; the adapter's term is then added to it.
            DenseBackward(op, n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
            var k = rankIndices?.Length ?? rank;
            if (k == 0 || (inputGrad is null && loraAGrad is null && loraBGrad is null)) return;

            // Scratch after the gathered A_I and B_I: u (N,k), then dA_I (k,C) and dB_I (O,k) when I is given.
            var gradients = rankIndices is null ? 0 : k * c + o * k;
            var operands = ActiveRanks(op, c, o, rank, loraA, loraB, rankIndices, scratchAfter: n * k + gradients);
            var u = Part(operands.After, 0, n * k);
            var (dy, x) = (View(outputGrad), View(input));

            if (loraBGrad is { } dBView)
            {
                // dB_I += s dy^T t.
                var dB = View(dBView);
                if (rankIndices is null)
                {
                    Gemm(op, GemmLayout.Tn, o, k, n, scale, dy, o, View(loraHidden), k, dB, rank, GemmFlags.Accumulate);
                }
                else
                {
                    var dBI = Part(operands.After, n * k + k * c, o * k);
                    Gemm(op, GemmLayout.Tn, o, k, n, scale, dy, o, View(loraHidden), k, dBI, k);
                    ScatterAddColumns(op, o, rank, k, 1f, dBI, operands.Indices, dB);
                }
            }
            if (loraAGrad is null && inputGrad is null) return;

            // u = dy B_I (N,k).
            Gemm(op, GemmLayout.Nn, n, k, o, 1f, dy, o, operands.B, operands.Ldb, u, k);
            if (loraAGrad is { } dAView)
            {
                // dA_I += s u^T x.
                var dA = View(dAView);
                if (rankIndices is null)
                {
                    Gemm(op, GemmLayout.Tn, k, c, n, scale, u, k, x, c, dA, c, GemmFlags.Accumulate);
                }
                else
                {
                    var dAI = Part(operands.After, n * k, k * c);
                    Gemm(op, GemmLayout.Tn, k, c, n, scale, u, k, x, c, dAI, c);
                    ScatterAddRows(op, k, c, 1f, dAI, operands.Indices, dA);
                }
            }
            if (inputGrad is { } dx)
            {
                // dx += s u A_I.
                Gemm(op, GemmLayout.Nn, n, c, k, scale, u, k, operands.A, c, View(dx), c, GemmFlags.Accumulate);
            }
        }
    }

    /// <inheritdoc/>
    protected override void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient,
        BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        const string op = nameof(MaskedSketchUpdate);
        var k = rankIndices.Length;
        if (k == 0) return;
        lock (_gate)
        {
            var indices = UploadInts(rankIndices);
            ScatterAddRows(op, k, c, coefficient, View(subA), indices, View(loraA));
            ScatterAddColumns(op, o, rank, k, coefficient, View(subB), indices, View(loraB));
        }
    }

    /// <inheritdoc/>
    /// <remarks>W += B_stack (diag(w) A_stack): the row weights scale A_stack's rows in scratch, then one GEMM.</remarks>
    protected override void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA,
        ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        const string op = nameof(StackedAggregation);
        if (stackedRank == 0 || o == 0 || c == 0) return;
        lock (_gate)
        {
            // The float scratch holds the weights at 0 and diag(w) A_stack after them: reserved whole first,
            // so that the upload (which starts at 0 too) does not grow it again.
            var scratch = FloatScratch(stackedRank + stackedRank * c);
            var weights = UploadFloats(rowWeights);
            var scaledA = scratch.SubView(stackedRank, stackedRank * c);
            var scale = Kernel(ref _scaleRows,
                a => a.LoadAutoGroupedStreamKernel<Index1D, int, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ScaleRowsKernel));
            Launch(op, () => scale(stackedRank * c, c, weights, View(stackedA), scaledA));
            Gemm(op, GemmLayout.Nn, o, c, stackedRank, 1f, View(stackedB), stackedRank, scaledA, c, View(weight), c, GemmFlags.Accumulate);
        }
    }

    /// <summary>
    /// dx += dy W (= when not accumulating); dW += dy^T x; dbias += colsum(dy), each when present.
    /// </summary>
    private void DenseBackward(string op, int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        var dy = View(outputGrad);
        if (inputGrad is { } dx)
        {
            Gemm(op, GemmLayout.Nn, n, c, o, 1f, dy, o, View(weight), c, View(dx), c, accumulate ? GemmFlags.Accumulate : GemmFlags.None);
        }
        if (weightGrad is { } dw) Gemm(op, GemmLayout.Tn, o, c, n, 1f, dy, o, View(input), c, View(dw), c, GemmFlags.Accumulate);
        if (biasGrad is { } db && o > 0)
        {
            var sum = Kernel(ref _columnSumAccumulate,
                a => a.LoadAutoGroupedStreamKernel<Index1D, int, ArrayView<float>, ArrayView<float>>(ColumnSumAccumulateKernel));
            Launch(op, () => sum(o, n, dy, View(db)));
        }
    }

    /// <summary>dst[:,I[q]] += coefficient src[:,q] (src (O,k), dst (O,r)).</summary>
    private void ScatterAddColumns(string op, int o, int rank, int k, float coefficient, ArrayView<float> src, ArrayView<int> indices,
        ArrayView<float> dst)
    {
        if (o * k == 0) return;
        var scatter = Kernel(ref _scatterAddColumns, a => a.LoadAutoGroupedStreamKernel<Index1D, int, int, float, ArrayView<float>,
            ArrayView<int>, ArrayView<float>>(ScatterAddColumnsKernel));
        Launch(op, () => scatter(o * k, rank, k, coefficient, src, indices, dst));
    }

    /// <summary>dst[I[q],:] += coefficient src[q,:] (src (k,C), dst (r,C)).</summary>
    private void ScatterAddRows(string op, int k, int c, float coefficient, ArrayView<float> src, ArrayView<int> indices, ArrayView<float> dst)
    {
        if (k * c == 0) return;
        var scatter = Kernel(ref _scatterAddRows,
            a => a.LoadAutoGroupedStreamKernel<Index1D, int, float, ArrayView<float>, ArrayView<int>, ArrayView<float>>(ScatterAddRowsKernel));
        Launch(op, () => scatter(k * c, c, coefficient, src, indices, dst));
    }

    /// <summary>
    /// The dense operands of the active ranks: A_I (k,C) with row stride C and B_I (O,k) with row stride
    /// Ldb. Without an index set they are A and B themselves (Ldb = r); with one, they are gathered into the
    /// float scratch and the indices uploaded to the int scratch. <see cref="ActiveRankOperands.After"/> is
    /// <paramref name="scratchAfter"/> more floats of scratch for the caller.
    /// </summary>
    private ActiveRankOperands ActiveRanks(string op, int c, int o, int rank, BufferView loraA, BufferView loraB, int[]? rankIndices,
        int scratchAfter)
    {
        if (rankIndices is null)
        {
            var after = FloatScratch(scratchAfter);
            return new ActiveRankOperands(View(loraA), View(loraB), rank, after, default);
        }
        var k = rankIndices.Length;
        var scratch = FloatScratch(k * c + o * k + scratchAfter);
        var indices = UploadInts(rankIndices);
        var (aI, bI) = (Part(scratch, 0, k * c), Part(scratch, k * c, o * k));
        if (c > 0)
        {
            var gatherRows = Kernel(ref _gatherRows,
                a => a.LoadAutoGroupedStreamKernel<Index1D, int, ArrayView<float>, ArrayView<int>, ArrayView<float>>(GatherRowsKernel));
            Launch(op, () => gatherRows(k * c, c, View(loraA), indices, aI));
        }
        if (o > 0)
        {
            var gatherColumns = Kernel(ref _gatherColumns,
                a => a.LoadAutoGroupedStreamKernel<Index1D, int, int, ArrayView<float>, ArrayView<int>, ArrayView<float>>(GatherColumnsKernel));
            Launch(op, () => gatherColumns(o * k, rank, k, View(loraB), indices, bI));
        }
        return new ActiveRankOperands(aI, bI, k, Part(scratch, k * c + o * k, scratchAfter), indices);
    }

    /// <summary>Floats [offset, offset + length) of a scratch view; empty when length is 0 (ILGPU refuses a sub-view at the end).</summary>
    private static ArrayView<float> Part(ArrayView<float> scratch, int offset, int length) => length == 0 ? default : scratch.SubView(offset, length);

    /// <summary>A_I (k,C), B_I (O,k) with row stride Ldb, the caller's scratch after them, and I on the device (when given).</summary>
    private readonly record struct ActiveRankOperands(ArrayView<float> A, ArrayView<float> B, int Ldb, ArrayView<float> After, ArrayView<int> Indices);
}
