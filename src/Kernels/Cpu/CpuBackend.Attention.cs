using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
namespace FedLora.Kernels.Cpu;

// Causal multi-head attention, one task per (batch, head) pair, each on one thread's scratch.
//
// A pair's work is six small matrix products over its (T,hs) blocks of q, k, v and their gradients,
// all done by one register-blocked kernel, EightRows, that keeps 8 rows x 2 vectors of sums in
// registers (with hs = 32, every vector loaded feeds 8 FMAs): 8 rows of weights, each a row or a
// column of a matrix, times a packed matrix's rows, over a width of whole 2-vector column tiles.
//   S = q k^T and dP = dy v^T for the 8 query rows of a block: the weights are 8 columns of q^T or
//     dy^T, the rows those of k^T or v^T, all packed (hs,Tp), over the columns up to the block's
//     last row, rounded up to 2 vectors (scores past a row's diagonal are overwritten);
//   y = P v and dq = dS k take 8 rows of P or dS, dk = dS^T q and dv = P^T dy 8 columns of dS or P
//     (read down a column), times packed (count,hsP) rows.
// Weights past each row's diagonal are set to exact zeros up to the end of its block, so every
// product runs over whole blocks with no triangle case, and only over the causal part plus the
// block on the diagonal; a position meets a later one only with weight 0.
// Forward, per block of 8 query rows: S; the softmax numerators, in sweeps over the 8 rows (each
// row's max and sum reductions then overlap the next row's work) with the exp that needs no denormal
// results (Simd.ExpFlushToZero, less than half of Simd.Exp's instructions); the normalised attention rows,
// streamed to memory with non-temporal stores; y = (numerators) v, scaled by each row's 1/sum.
// Backward in two passes: per block of query rows, dP, then P (copied from the attention matrix,
// which is read only on and below the diagonal) and dS = scale P (dP - rowsum(P dP)) into (T,Tp)
// scratch, then dq += dS k; per block of key rows, dk += dS^T q and dv += P^T dy; so every gradient
// row is summed in registers and added to inputGrad once (or stored, when not accumulating: the
// pairs' rows tile inputGrad exactly, so every element is written).
// Padding: Tp is T rounded up to 32 floats (so that 2-vector column tiles stay inside at every
// width) plus 16, an odd number of cache lines, so that a walk down a column of a (.,Tp) matrix
// visits many L1 sets; hsP is hs rounded up to 2 vectors; packed rows past T and columns past hs
// are zero. The transposes are the GEMM's packing (GemmPack.Panel: 8x8 blocks in registers).
public unsafe partial class CpuBackend
{
    /// <summary>Query (or key) rows per block: the rows of the register-blocked kernels.</summary>
    private const int BlockRows = 8;

    /// <summary>
    /// Per (b, h) pair: P = softmax(q k^T / sqrt(hs)) over j &lt;= i (0 above the diagonal), y = P v.
    /// input is (B,T,3C) holding q, k, v; attention is (B,NH,T,T); output is (B,T,C); hs = C/NH.
    /// </summary>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        if (heads == 0 || b == 0 || t == 0) return;
        var job = new AttentionJob(new AttentionShape(t, c, heads), Simd.Address(input), Simd.Address(attention), Simd.Address(output),
            null, forward: true, accumulate: false);
        CpuParallel.For(b * heads, ref job);
    }

    /// <summary>
    /// Per (b, h) pair, with dP = dy v^T and dS = P (dP - rowsum(P dP)) / sqrt(hs) (zero above the
    /// diagonal): dq += dS k; dk += dS^T q; dv += P^T dy (= when not accumulating). input and
    /// inputGrad are (B,T,3C), attention is (B,NH,T,T), outputGrad is (B,T,C).
    /// </summary>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad, bool accumulate)
    {
        if (heads == 0 || b == 0 || t == 0) return;
        var job = new AttentionJob(new AttentionShape(t, c, heads), Simd.Address(input), Simd.Address(attention), Simd.Address(outputGrad),
            Simd.Address(inputGrad), forward: false, accumulate);
        CpuParallel.For(b * heads, ref job);
    }

    /// <summary>T, C, NH and the derived sizes of one (b, h) pair.</summary>
    private readonly struct AttentionShape(int t, int c, int heads)
    {
        public int T { get; } = t;
        public int C { get; } = c;
        public int Heads { get; } = heads;
        public int HeadSize { get; } = c / heads;
        public float Scale { get; } = (float)(1 / Math.Sqrt(c / heads));

        /// <summary>T rounded up to whole blocks of <see cref="BlockRows"/>.</summary>
        public int BlockedT => RoundUp(T, BlockRows);
    }

    private readonly struct AttentionJob(AttentionShape shape, float* input, float* attention, float* outputOrGrad, float* inputGrad,
        bool forward, bool accumulate) : IParallelJob
    {
        public void Execute(int index)
        {
            var (batch, head) = Math.DivRem(index, shape.Heads);
            var qkv = input + (long)batch * shape.T * 3 * shape.C + head * shape.HeadSize;
            var att = attention + (long)index * shape.T * shape.T;
            var y = outputOrGrad + (long)batch * shape.T * shape.C + head * shape.HeadSize;
            if (forward)
            {
                if (SimdWidth.Use512) AttentionForwardPair<Simd512>(shape, qkv, att, y);
                else if (SimdWidth.Use256) AttentionForwardPair<Simd256>(shape, qkv, att, y);
                else if (SimdWidth.Use128) AttentionForwardPair<Simd128>(shape, qkv, att, y);
                else AttentionForwardPair<SimdScalar>(shape, qkv, att, y);
            }
            else
            {
                var dqkv = inputGrad + (long)batch * shape.T * 3 * shape.C + head * shape.HeadSize;
                if (SimdWidth.Use512) AttentionBackwardPair<Simd512>(shape, qkv, att, y, dqkv, accumulate);
                else if (SimdWidth.Use256) AttentionBackwardPair<Simd256>(shape, qkv, att, y, dqkv, accumulate);
                else if (SimdWidth.Use128) AttentionBackwardPair<Simd128>(shape, qkv, att, y, dqkv, accumulate);
                else AttentionBackwardPair<SimdScalar>(shape, qkv, att, y, dqkv, accumulate);
            }
        }
    }

    /// <summary>Scratch sizes of one pair: Tp (columns of k^T, v^T and score rows) and hsP (columns of packed rows).</summary>
    private static (int Tp, int HsP) AttentionPadding<TVector>(AttentionShape shape) where TVector : unmanaged, ISimdFloat<TVector>
    {
        // At T = 256 a 1 KiB stride put all 32 rows of k^T in 4 L1 sets; 272 floats spread them.
        return (RoundUp(shape.T, 32) + 16, RoundUp(shape.HeadSize, 2 * TVector.Count));
    }

    private static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;

    /// <summary>Carves <paramref name="floats"/> from a scratch cursor, keeping 64-byte alignment.</summary>
    private static float* Take(ref float* cursor, int floats)
    {
        var start = cursor;
        cursor += RoundUp(floats, 16);
        return start;
    }

    private static int Aligned(int floats) => RoundUp(floats, 16);

    /// <summary>One (b, h) pair's forward pass. qkv points at its q (row stride 3C), att at its (T,T) block, y at its output (row stride C).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttentionForwardPair<TVector>(AttentionShape shape, float* qkv, float* att, float* y)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        int t = shape.T, hs = shape.HeadSize, stride = 3 * shape.C;
        var (tp, hsP) = AttentionPadding<TVector>(shape);
        var cursor = Simd.TaskScratch(2 * Aligned(hs * tp) + Aligned(t * hsP) + Aligned(BlockRows * tp) + Aligned(BlockRows * hsP)
            + Aligned(BlockRows));
        var queriesT = Take(ref cursor, hs * tp);
        var keysT = Take(ref cursor, hs * tp);
        var values = Take(ref cursor, t * hsP);
        var scores = Take(ref cursor, BlockRows * tp);
        var outputs = Take(ref cursor, BlockRows * hsP);
        var inverseSums = Take(ref cursor, BlockRows);
        PackTransposed(qkv + shape.C, stride, t, hs, keysT, tp);
        PackTransposed(qkv, stride, t, hs, queriesT, tp);
        PackRows<TVector>(qkv + 2 * shape.C, stride, t, hs, values, hsP);

        for (var i0 = 0; i0 < t; i0 += BlockRows)
        {
            var rows = Math.Min(BlockRows, t - i0);
            // Rows past T have zero queries, so zero scores: finite weights whose outputs are dropped.
            EightRows<TVector>(queriesT + i0, 1, tp, hs, keysT, tp, RoundUp(i0 + BlockRows, 2 * TVector.Count), scores, tp);
            SoftmaxBlock<TVector>(scores, tp, i0, rows, shape.Scale, inverseSums);
            for (var r = 0; r < rows; r++) StoreAttentionRow(scores + r * tp, i0 + r + 1, inverseSums[r], att + (long)(i0 + r) * t, t);
            // The weights are 0 past each row's diagonal, so every row runs to the block's end.
            EightRows<TVector>(scores, tp, 1, i0 + rows, values, hsP, hsP, outputs, hsP);
            for (var r = 0; r < rows; r++) ScaleRow<TVector>(inverseSums[r], outputs + r * hsP, y + (long)(i0 + r) * shape.C, hs);
        }
        // Non-temporal stores are weakly ordered: make them visible before the task reports done.
        if (Sse.IsSupported) Sse.StoreFence();
    }

    /// <summary>
    /// One (b, h) pair's backward pass; dy points at its output gradient (row stride C), dqkv like qkv,
    /// which is added to or, when not <paramref name="accumulate"/>, overwritten.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttentionBackwardPair<TVector>(AttentionShape shape, float* qkv, float* att, float* dy, float* dqkv, bool accumulate)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        int t = shape.T, hs = shape.HeadSize, stride = 3 * shape.C, c = shape.C;
        var (tp, hsP) = AttentionPadding<TVector>(shape);
        var cursor = Simd.TaskScratch(2 * Aligned(hs * tp) + 3 * Aligned(t * hsP) + Aligned(BlockRows * tp)
            + 2 * Aligned(shape.BlockedT * tp) + Aligned(BlockRows * hsP));
        var valuesT = Take(ref cursor, hs * tp);
        var outputGradsT = Take(ref cursor, hs * tp);
        var keys = Take(ref cursor, t * hsP);
        var queries = Take(ref cursor, t * hsP);
        var outputGrads = Take(ref cursor, t * hsP);
        var probabilityGrads = Take(ref cursor, BlockRows * tp);
        var probabilities = Take(ref cursor, shape.BlockedT * tp);
        var scoreGrads = Take(ref cursor, shape.BlockedT * tp);
        var sums = Take(ref cursor, BlockRows * hsP);
        PackTransposed(qkv + 2 * c, stride, t, hs, valuesT, tp);
        PackTransposed(dy, c, t, hs, outputGradsT, tp);
        PackRows<TVector>(qkv + c, stride, t, hs, keys, hsP);
        PackRows<TVector>(qkv, stride, t, hs, queries, hsP);
        PackRows<TVector>(dy, c, t, hs, outputGrads, hsP);
        // Rows past T are the last block's missing rows: zero weights, their sums dropped.
        new Span<float>(scoreGrads + t * tp, (shape.BlockedT - t) * tp).Clear();

        // Per block of query rows: dP, then P and dS into (T,Tp) scratch with zeros past each
        // diagonal up to the block's end, then dq += dS k.
        for (var i0 = 0; i0 < t; i0 += BlockRows)
        {
            var rows = Math.Min(BlockRows, t - i0);
            EightRows<TVector>(outputGradsT + i0, 1, tp, hs, valuesT, tp, RoundUp(i0 + BlockRows, 2 * TVector.Count), probabilityGrads, tp);
            SoftmaxBackwardBlock<TVector>(att + (long)i0 * t, t, probabilityGrads, probabilities + i0 * tp, scoreGrads + i0 * tp, tp, i0, rows,
                shape.Scale);
            EightRows<TVector>(scoreGrads + i0 * tp, tp, 1, i0 + rows, keys, hsP, hsP, sums, hsP);
            for (var r = 0; r < rows; r++) GradientRow<TVector>(sums + r * hsP, dqkv + (long)(i0 + r) * stride, hs, accumulate);
        }
        // Per block of key rows j0..j0+7, summing over the query rows i >= j0 (zero weights where i < j):
        // dk += dS^T q, dv += P^T dy.
        for (var j0 = 0; j0 < t; j0 += BlockRows)
        {
            var keyRows = Math.Min(BlockRows, t - j0);
            var dk = dqkv + (long)j0 * stride + c;
            EightRows<TVector>(scoreGrads + j0 * tp + j0, 1, tp, t - j0, queries + j0 * hsP, hsP, hsP, sums, hsP);
            for (var r = 0; r < keyRows; r++) GradientRow<TVector>(sums + r * hsP, dk + (long)r * stride, hs, accumulate);
            EightRows<TVector>(probabilities + j0 * tp + j0, 1, tp, t - j0, outputGrads + j0 * hsP, hsP, hsP, sums, hsP);
            for (var r = 0; r < keyRows; r++) GradientRow<TVector>(sums + r * hsP, dk + c + (long)r * stride, hs, accumulate);
        }
    }

    /// <summary>
    /// destination[d * tp + j] = source[j * stride + d] for j &lt; T, d &lt; hs; 0 for T &lt;= j &lt; tp: the GEMM's
    /// packing, which transposes 8x8 blocks in registers.
    /// </summary>
    private static void PackTransposed(float* source, int stride, int t, int hs, float* destination, int tp) =>
        GemmPack.Panel(GemmOperand.Plain(GemmSource.Strided(source, stride, 1), hs), 0, t, tp, 0, hs, destination);

    /// <summary>destination[j * hsP + d] = source[j * stride + d] for j &lt; T, d &lt; hs; 0 for hs &lt;= d &lt; hsP.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackRows<TVector>(float* source, int stride, int t, int hs, float* destination, int hsP)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        for (var j = 0; j < t; j++)
        {
            var row = source + (long)j * stride;
            var packed = destination + j * hsP;
            var d = 0;
            for (; d <= hs - TVector.Count; d += TVector.Count) TVector.Load(row + d).Store(packed + d);
            for (; d < hsP; d++) packed[d] = d < hs ? row[d] : 0f;
        }
    }

    /// <summary>destination[0..n) += source[0..n), or = when not <paramref name="accumulate"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void GradientRow<TVector>(float* source, float* destination, int n, bool accumulate)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var d = 0;
        for (; d <= n - TVector.Count; d += TVector.Count)
        {
            var sum = TVector.Load(source + d);
            (accumulate ? TVector.Load(destination + d) + sum : sum).Store(destination + d);
        }
        for (; d < n; d++) destination[d] = accumulate ? destination[d] + source[d] : source[d];
    }

    /// <summary>destination[0..n) = factor * source[0..n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleRow<TVector>(float factor, float* source, float* destination, int n) where TVector : unmanaged, ISimdFloat<TVector>
    {
        var f = TVector.Create(factor);
        var d = 0;
        for (; d <= n - TVector.Count; d += TVector.Count) (f * TVector.Load(source + d)).Store(destination + d);
        for (; d < n; d++) destination[d] = factor * source[d];
    }

    /// <summary>
    /// Eight weighted sums of rows: o[r * oStride + d] = sum_{k &lt; count} a[r * rowStep + k * colStep] b[k * bStride + d]
    /// for r &lt; 8, d &lt; width (a multiple of 2 vectors). The weights are 8 rows of a matrix (colStep 1) or 8 of
    /// its columns (rowStep 1); b has count rows, o 8.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void EightRows<TVector>(float* a, int rowStep, int colStep, int count, float* b, int bStride, int width, float* o, int oStride)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        float* a0 = a, a1 = a + rowStep, a2 = a + 2 * rowStep, a3 = a + 3 * rowStep;
        float* a4 = a + 4 * rowStep, a5 = a + 5 * rowStep, a6 = a + 6 * rowStep, a7 = a + 7 * rowStep;
        for (var d = 0; d < width; d += 2 * w)
        {
            TVector o00 = TVector.Zero, o01 = TVector.Zero, o10 = TVector.Zero, o11 = TVector.Zero;
            TVector o20 = TVector.Zero, o21 = TVector.Zero, o30 = TVector.Zero, o31 = TVector.Zero;
            TVector o40 = TVector.Zero, o41 = TVector.Zero, o50 = TVector.Zero, o51 = TVector.Zero;
            TVector o60 = TVector.Zero, o61 = TVector.Zero, o70 = TVector.Zero, o71 = TVector.Zero;
            var row = b + d;
            long k = 0;
            for (var n = 0; n < count; n++, row += bStride, k += colStep)
            {
                var b0 = TVector.Load(row);
                var b1 = TVector.Load(row + w);
                var x = TVector.Create(a0[k]);
                o00 = TVector.MultiplyAdd(x, b0, o00);
                o01 = TVector.MultiplyAdd(x, b1, o01);
                x = TVector.Create(a1[k]);
                o10 = TVector.MultiplyAdd(x, b0, o10);
                o11 = TVector.MultiplyAdd(x, b1, o11);
                x = TVector.Create(a2[k]);
                o20 = TVector.MultiplyAdd(x, b0, o20);
                o21 = TVector.MultiplyAdd(x, b1, o21);
                x = TVector.Create(a3[k]);
                o30 = TVector.MultiplyAdd(x, b0, o30);
                o31 = TVector.MultiplyAdd(x, b1, o31);
                x = TVector.Create(a4[k]);
                o40 = TVector.MultiplyAdd(x, b0, o40);
                o41 = TVector.MultiplyAdd(x, b1, o41);
                x = TVector.Create(a5[k]);
                o50 = TVector.MultiplyAdd(x, b0, o50);
                o51 = TVector.MultiplyAdd(x, b1, o51);
                x = TVector.Create(a6[k]);
                o60 = TVector.MultiplyAdd(x, b0, o60);
                o61 = TVector.MultiplyAdd(x, b1, o61);
                x = TVector.Create(a7[k]);
                o70 = TVector.MultiplyAdd(x, b0, o70);
                o71 = TVector.MultiplyAdd(x, b1, o71);
            }
            var target = o + d;
            o00.Store(target);
            o01.Store(target + w);
            target += oStride;
            o10.Store(target);
            o11.Store(target + w);
            target += oStride;
            o20.Store(target);
            o21.Store(target + w);
            target += oStride;
            o30.Store(target);
            o31.Store(target + w);
            target += oStride;
            o40.Store(target);
            o41.Store(target + w);
            target += oStride;
            o50.Store(target);
            o51.Store(target + w);
            target += oStride;
            o60.Store(target);
            o61.Store(target + w);
            target += oStride;
            o70.Store(target);
            o71.Store(target + w);
        }
    }

    /// <summary>
    /// The softmax numerators of a block's rows: row r (query i0 + r, which sees n = i0 + r + 1 positions)
    /// becomes s[r * tp + j] = exp(scale (s[r * tp + j] - max)) for j &lt; n, 0 from n up to the next whole
    /// vector and up to the block's end, and inverseSums[r] = 1 / the row's sum (the normalisation is
    /// left to the caller).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxBlock<TVector>(float* s, int tp, int i0, int rows, float scale, float* inverseSums)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        // Sweeps over all rows rather than one row at a time, so that the latency of each row's
        // horizontal max and sum overlaps the next row's work.
        var w = TVector.Count;
        for (var r = 0; r < rows; r++)
        {
            // -inf up to the next whole vector (exp makes it 0), 0 past it up to the block's end.
            var n = i0 + r + 1;
            for (var j = n; j < Math.Max(RoundUp(n, w), i0 + rows); j++) s[r * tp + j] = j < RoundUp(n, w) ? float.NegativeInfinity : 0f;
        }
        var maxima = stackalloc float[BlockRows];
        for (var r = 0; r < rows; r++)
        {
            var row = s + r * tp;
            var m = TVector.Load(row);
            for (var j = w; j <= i0 + r; j += w) m = TVector.Max(m, TVector.Load(row + j));
            maxima[r] = TVector.MaxAcross(m);
        }
        var scaleVector = TVector.Create(scale);
        for (var r = 0; r < rows; r++)
        {
            var row = s + r * tp;
            var max = TVector.Create(maxima[r]);
            var sums = TVector.Zero;
            for (var j = 0; j <= i0 + r; j += w)
            {
                var e = Simd.ExpFlushToZero((TVector.Load(row + j) - max) * scaleVector);
                e.Store(row + j);
                sums += e;
            }
            inverseSums[r] = 1f / TVector.Sum(sums);
        }
    }

    /// <summary>
    /// An attention row of T floats: inverseSum * e[0..n), then zeros. Whole cache lines are written
    /// with non-temporal stores: the matrix is read again only by the backward pass, after the rest of
    /// the model's forward pass has evicted it, so streaming it to memory saves reading each line in
    /// before overwriting it, and keeps the caches for q, k and v.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StoreAttentionRow(float* e, int n, float inverseSum, float* row, int t)
    {
        var line = stackalloc float[16];
        var j = 0;
        for (; j < t && ((nint)(row + j) & 63) != 0; j++) row[j] = j < n ? e[j] * inverseSum : 0f;
        for (; j + 16 <= t; j += 16)
        {
            if (j + 16 <= n) StoreLineNonTemporal(e + j, inverseSum, row + j);
            else if (j >= n) StoreLineNonTemporal(null, 0f, row + j);
            else
            {
                for (var k = 0; k < 16; k++) line[k] = j + k < n ? e[j + k] : 0f;
                StoreLineNonTemporal(line, inverseSum, row + j);
            }
        }
        for (; j < t; j++) row[j] = j < n ? e[j] * inverseSum : 0f;
    }

    /// <summary>
    /// destination[0..16) = factor * source[0..16) (zeros if source is null) in one 64-byte aligned cache line,
    /// with non-temporal stores at the selected width.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreLineNonTemporal(float* source, float factor, float* destination)
    {
        if (SimdWidth.Use512)
        {
            Vector512.StoreAlignedNonTemporal(source is null ? Vector512<float>.Zero : Vector512.Load(source) * factor, destination);
        }
        else if (SimdWidth.Use256)
        {
            for (var k = 0; k < 16; k += 8)
            {
                Vector256.StoreAlignedNonTemporal(source is null ? Vector256<float>.Zero : Vector256.Load(source + k) * factor, destination + k);
            }
        }
        else if (SimdWidth.Use128)
        {
            for (var k = 0; k < 16; k += 4)
            {
                Vector128.StoreAlignedNonTemporal(source is null ? Vector128<float>.Zero : Vector128.Load(source + k) * factor, destination + k);
            }
        }
        else
        {
            for (var k = 0; k < 16; k++) destination[k] = source is null ? 0f : source[k] * factor;
        }
    }

    /// <summary>
    /// A block's softmax backward: for row r (query i0 + r, n = i0 + r + 1 positions), p = att[r * t + ..],
    /// dp = dP[r * tp + ..]: P[r * tp + j] = p[j] and dS[r * tp + j] = scale p[j] (dp[j] - sum_{l &lt; n} p[l] dp[l])
    /// for j &lt; n, both 0 from n to the block's end. att is read only below n.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxBackwardBlock<TVector>(float* att, int t, float* dP, float* probabilities, float* scoreGrads, int tp, int i0,
        int rows, float scale) where TVector : unmanaged, ISimdFloat<TVector>
    {
        // Two sweeps over the rows, as in SoftmaxBlock: the dot products' reductions overlap.
        var w = TVector.Count;
        var dots = stackalloc float[BlockRows];
        for (var r = 0; r < rows; r++)
        {
            float* p = att + (long)r * t, dp = dP + r * tp;
            var n = i0 + r + 1;
            var sum = TVector.Zero;
            var j = 0;
            for (; j <= n - w; j += w) sum = TVector.MultiplyAdd(TVector.Load(p + j), TVector.Load(dp + j), sum);
            var dot = TVector.Sum(sum);
            for (; j < n; j++) dot += p[j] * dp[j];
            dots[r] = dot;
        }
        var scaleVector = TVector.Create(scale);
        for (var r = 0; r < rows; r++)
        {
            float* p = att + (long)r * t, dp = dP + r * tp, pCopy = probabilities + r * tp, ds = scoreGrads + r * tp;
            var n = i0 + r + 1;
            var dot = TVector.Create(dots[r]);
            var j = 0;
            for (; j <= n - w; j += w)
            {
                var pj = TVector.Load(p + j);
                pj.Store(pCopy + j);
                (pj * (TVector.Load(dp + j) - dot) * scaleVector).Store(ds + j);
            }
            for (; j < n; j++)
            {
                pCopy[j] = p[j];
                ds[j] = p[j] * (dp[j] - dots[r]) * scale;
            }
            for (; j < i0 + rows; j++) pCopy[j] = ds[j] = 0f;
        }
    }
}
