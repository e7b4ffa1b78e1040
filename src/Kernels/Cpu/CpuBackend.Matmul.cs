using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FedLora.Kernels.Cpu;

// Matmul, low-rank (LoRA) matmul, stacked aggregation and masked sketch update on the one GEMM engine
// (Gemm.cs). Each op is a few GEMM calls whose operands say how to read the tensors: the naive
// loops they must agree with are ReferenceBackend.Matmul.cs.
//
// Shapes: x is (N,C), W is (O,C), bias (O), y and dy (N,O); A is (r,C), B is (O,r), I is a rank index
// set of k entries (k = r without one), t = x A_I^T and u = dy B_I are (N,k), s is the LoRA scale.
public partial class CpuBackend
{
    /// <summary>y(N,O) = x(N,C) W(O,C)^T + bias(O): one GEMM with M = N, N = O, K = C, bias added in the epilogue.</summary>
    protected override unsafe void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        var x = Simd.Address(input);
        var w = Simd.Address(weight);
        var a = GemmOperand.Plain(GemmSource.Strided(x, c, 1), c);
        var b = GemmOperand.Plain(GemmSource.Strided(w, c, 1), c);
        Gemm.Run(n, o, c, a, b, GemmOutput.RowMajor(Simd.Address(output), o), accumulate: false, bias: Simd.AddressOrNull(bias));
    }

    /// <summary>
    /// dx(N,C) += dy(N,O) W(O,C) (= when not accumulating): M = N, N = C, K = O. dW(O,C) += dy^T x:
    /// M = O, N = C, K = N, with dbias(O) += colsum(dy) summed by the dW tiles from the rows of dy^T
    /// they own (or one pass over dy without dW).
    /// </summary>
    protected override unsafe void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        var dy = Simd.Address(outputGrad);
        var x = Simd.Address(input);
        var w = Simd.Address(weight);
        if (inputGrad is { } dx)
        {
            var a = GemmOperand.Plain(GemmSource.Strided(dy, o, 1), o);
            var b = GemmOperand.Plain(GemmSource.Strided(w, 1, c), o);
            Gemm.Run(n, c, o, a, b, GemmOutput.RowMajor(Simd.Address(dx), c), accumulate);
        }
        WeightAndBiasGrad(n, c, o, dy, x, weightGrad, biasGrad);
    }

    /// <summary>dW(O,C) += dy^T x and dbias(O) += colsum(dy); either may be null.</summary>
    private static unsafe void WeightAndBiasGrad(int n, int c, int o, float* dy, float* x, BufferView? weightGrad, BufferView? biasGrad)
    {
        var dbias = Simd.AddressOrNull(biasGrad);
        if (weightGrad is { } dw && c > 0)
        {
            var a = GemmOperand.Plain(GemmSource.Strided(dy, 1, o), n);
            var b = GemmOperand.Plain(GemmSource.Strided(x, 1, c), n);
            Gemm.Run(o, c, n, a, b, GemmOutput.RowMajor(Simd.Address(dw), c), accumulate: true, rowSums: dbias);
        }
        else if (dbias != null)
        {
            for (var i = 0; i < n; i++) GemmViews.Add(dy + (nint)i * o, dbias, o);
        }
    }

    /// <summary>
    /// t(N,k) = x A_I^T, then y(N,O) = [x | s t] [W | B_I]^T + bias as ONE GEMM with K = C + k: the
    /// adapter rides along the base product instead of a second pass over y.
    /// </summary>
    protected override unsafe void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias,
        BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        var k = rankIndices?.Length ?? rank;
        var x = Simd.Address(input);
        var w = Simd.Address(weight);
        var t = Simd.Address(loraHidden);
        fixed (int* indices = rankIndices)
        {
            // t = x A_I^T: A_I's rows are gathered through I while packing.
            var aRows = GemmSource.Strided(Simd.Address(loraA), c, 1);
            aRows.RowIndex = indices;
            Gemm.Run(n, k, c, GemmOperand.Plain(GemmSource.Strided(x, c, 1), c), GemmOperand.Plain(aRows, c),
                GemmOutput.RowMajor(t, k), accumulate: false);

            // [x | s t] is (N, C+k); [W | B_I] is (O, C+k), B_I read as B[o, I[q]].
            var hidden = GemmSource.Strided(t, k, 1);
            hidden.Scale = scale;
            var bColumns = GemmSource.Strided(Simd.Address(loraB), rank, 1);
            bColumns.KIndex = indices;
            var a = GemmOperand.Concat(GemmSource.Strided(x, c, 1), c, hidden);
            var b = GemmOperand.Concat(GemmSource.Strided(w, c, 1), c, bColumns);
            Gemm.Run(n, o, c + k, a, b, GemmOutput.RowMajor(Simd.Address(output), o), accumulate: false, bias: Simd.AddressOrNull(bias));
        }
    }

    /// <summary>
    /// u(N,k) = dy B_I; dx += [dy | s u] [W ; A_I] (= when not accumulating) as ONE GEMM with K = O + k;
    /// dW += dy^T x (dbias folded); dB[:,I] += s dy^T t and dA[I,:] += s u^T x, scattered through I by
    /// the GEMM's output map.
    /// </summary>
    protected override unsafe void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input,
        BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate)
    {
        var k = rankIndices?.Length ?? rank;
        var dy = Simd.Address(outputGrad);
        var x = Simd.Address(input);
        var w = Simd.Address(weight);
        var t = Simd.Address(loraHidden);
        fixed (int* indices = rankIndices)
        {
            var needU = inputGrad is not null || loraAGrad is not null;
            var u = needU ? GemmWorkspace.Caller.Scratch((long)n * k) : null;
            if (needU)
            {
                // u = dy B_I: B_I^T's rows are B's columns I (element (q, o) = B[o, I[q]]).
                var bColumns = GemmSource.Strided(Simd.Address(loraB), 1, rank);
                bColumns.RowIndex = indices;
                Gemm.Run(n, k, o, GemmOperand.Plain(GemmSource.Strided(dy, o, 1), o), GemmOperand.Plain(bColumns, o),
                    GemmOutput.RowMajor(u, k), accumulate: false);
            }
            if (inputGrad is { } dx)
            {
                // [dy | s u] is (N, O+k); [W ; A_I] is (O+k, C), read by columns c.
                var hidden = GemmSource.Strided(u, k, 1);
                hidden.Scale = scale;
                var aRows = GemmSource.Strided(Simd.Address(loraA), 1, c);
                aRows.KIndex = indices;
                var a = GemmOperand.Concat(GemmSource.Strided(dy, o, 1), o, hidden);
                var b = GemmOperand.Concat(GemmSource.Strided(w, 1, c), o, aRows);
                Gemm.Run(n, c, o + k, a, b, GemmOutput.RowMajor(Simd.Address(dx), c), accumulate);
            }
            WeightAndBiasGrad(n, c, o, dy, x, weightGrad, biasGrad);
            if (loraBGrad is { } dbView && n > 0)
            {
                // dB[o, I[q]] += sum_n dy[n,o] (s t[n,q]): the scale rides on the packed side, dy^T is read in place.
                var hidden = GemmSource.Strided(t, 1, k);
                hidden.Scale = scale;
                var output = GemmOutput.RowMajor(Simd.Address(dbView), rank);
                output.ColIndex = indices;
                Gemm.Run(o, k, n, GemmOperand.Plain(GemmSource.Strided(dy, 1, o), n), GemmOperand.Plain(hidden, n), output, accumulate: true);
            }
            if (loraAGrad is { } daView && n > 0)
            {
                // dA[I[q], c] += s sum_n u[n,q] x[n,c].
                var uT = GemmSource.Strided(u, 1, k);
                uT.Scale = scale;
                var output = GemmOutput.RowMajor(Simd.Address(daView), c);
                output.RowIndex = indices;
                Gemm.Run(k, c, n, GemmOperand.Plain(uT, n), GemmOperand.Plain(GemmSource.Strided(x, 1, c), n), output, accumulate: true);
            }
        }
    }

    /// <summary>W(O,C) += B_stack(O,R) diag(rowWeights) A_stack(R,C): one GEMM, the weights applied while packing A_stack.</summary>
    protected override unsafe void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA,
        ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        fixed (float* weights = rowWeights)
        {
            var b = GemmSource.Strided(Simd.Address(stackedA), 1, c);
            b.KScale = weights;
            Gemm.Run(o, c, stackedRank, GemmOperand.Plain(GemmSource.Strided(Simd.Address(stackedB), stackedRank, 1), stackedRank),
                GemmOperand.Plain(b, stackedRank), GemmOutput.RowMajor(Simd.Address(weight), c), accumulate: true);
        }
    }

    /// <summary>
    /// A[I,:] += coefficient subA(k,C) row by row (SIMD); B[:,I] += coefficient subB(O,k) (a scatter per
    /// row of B). Memory-bound: one pass over the sub-adapter.
    /// </summary>
    protected override unsafe void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient,
        BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        var sa = Simd.Address(subA);
        var sb = Simd.Address(subB);
        var a = Simd.Address(loraA);
        var b = Simd.Address(loraB);
        var k = rankIndices.Length;
        for (var q = 0; q < k; q++)
        {
            GemmViews.Axpy(coefficient, sa + (nint)q * c, a + (nint)rankIndices[q] * c, c);
        }
        fixed (int* indices = rankIndices)
        {
            for (var j = 0; j < o; j++)
            {
                var from = sb + (nint)j * k;
                var to = b + (nint)j * rank;
                for (var q = 0; q < k; q++) to[indices[q]] += coefficient * from[q];
            }
        }
    }
}

/// <summary>The GEMM family's serial vector loops on raw pointers (bias-gradient rows, sketch rows, packing's row sums).</summary>
internal static unsafe class GemmViews
{
    /// <summary>y[0..count) += x[0..count).</summary>
    public static void Add(float* x, float* y, int count) => Axpy(1f, x, y, count);

    /// <summary>y[0..count) += alpha x[0..count), at the widest vector width allowed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Axpy(float alpha, float* x, float* y, int count)
    {
        var i = 0;
        if (SimdWidth.Use512)
        {
            var s = Vector512.Create(alpha);
            for (; i <= count - 16; i += 16) Vector512.FusedMultiplyAdd(s, Vector512.Load(x + i), Vector512.Load(y + i)).Store(y + i);
        }
        if (SimdWidth.Use256)
        {
            var s = Vector256.Create(alpha);
            for (; i <= count - 8; i += 8) Vector256.FusedMultiplyAdd(s, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
        }
        if (SimdWidth.Use128)
        {
            var s = Vector128.Create(alpha);
            for (; i <= count - 4; i += 4) Vector128.FusedMultiplyAdd(s, Vector128.Load(x + i), Vector128.Load(y + i)).Store(y + i);
        }
        for (; i < count; i++) y[i] += alpha * x[i];
    }
}
