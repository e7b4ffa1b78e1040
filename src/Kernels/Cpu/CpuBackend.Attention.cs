using System.Runtime.CompilerServices;
namespace FedLora.Kernels.Cpu;

// Causal multi-head attention, one task per (batch, head) pair, each on one thread's scratch.
//
// A pair's work is small matrix products over its (T,hs) blocks of q, k and v, done four query
// rows at a time so that every key or value vector loaded from L1 feeds four FMAs:
//   scores S = q k^T (only the causal part: for rows i0..i0+3, columns up to i0+3), from k packed
//   transposed (hs, Tp) so that a vector of S is a sum over d of q[d] * (a row of k^T);
//   P = softmax(scale S) per row, max subtracted, written to the attention matrix;
//   y = P v, from v packed as (T, hsP) rows, the columns j <= i0 for all four rows at once and
//   the last three (the triangle) row by row, so that no row ever touches a later position.
// The backward pass reuses the same two block kernels (dP = dy v^T, dq = dS k) and adds a third,
// the rank-4 update dk += dS^T q, dv += P^T dy. Padding: Tp is T rounded up to 16 floats (and to
// an odd number of cache lines), hsP is hs rounded up to the vector width; the pads are zero, so
// the kernels run on whole vectors without tails; in the last block, rows past T repeat row i0
// and their results are dropped. Measured at B=4, T=256, C=256, NH=4 on one core: 1.4-1.6 ms, about
// 9x faster than the row-at-a-time SIMD loop (a dot product over hs per score, a P v axpy per row).
public unsafe partial class CpuBackend
{
    /// <summary>
    /// Per (b, h) pair: P = softmax(q k^T / sqrt(hs)) over j &lt;= i (0 above the diagonal), y = P v.
    /// input is (B,T,3C) holding q, k, v; attention is (B,NH,T,T); output is (B,T,C); hs = C/NH.
    /// </summary>
    protected override void AttentionForwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention, BufferView output)
    {
        if (heads == 0 || b == 0 || t == 0) return;
        var job = new AttentionJob(new AttentionShape(t, c, heads), Simd.Address(input), Simd.Address(attention), Simd.Address(output),
            null, forward: true);
        CpuParallel.For(b * heads, ref job);
    }

    /// <summary>
    /// Per (b, h) pair, with dP = dy v^T and dS = P (dP - rowsum(P dP)) / sqrt(hs) (zero above the
    /// diagonal): dq += dS k; dk += dS^T q; dv += P^T dy. input and inputGrad are (B,T,3C),
    /// attention is (B,NH,T,T), outputGrad is (B,T,C).
    /// </summary>
    protected override void AttentionBackwardCore(int b, int t, int c, int heads, BufferView input, BufferView attention,
        BufferView outputGrad, BufferView inputGrad)
    {
        if (heads == 0 || b == 0 || t == 0) return;
        var job = new AttentionJob(new AttentionShape(t, c, heads), Simd.Address(input), Simd.Address(attention), Simd.Address(outputGrad),
            Simd.Address(inputGrad), forward: false);
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
    }

    private readonly struct AttentionJob(AttentionShape shape, float* input, float* attention, float* outputOrGrad, float* inputGrad,
        bool forward) : IParallelJob
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
                if (SimdWidth.Use512) AttentionBackwardPair<Simd512>(shape, qkv, att, y, dqkv);
                else if (SimdWidth.Use256) AttentionBackwardPair<Simd256>(shape, qkv, att, y, dqkv);
                else if (SimdWidth.Use128) AttentionBackwardPair<Simd128>(shape, qkv, att, y, dqkv);
                else AttentionBackwardPair<SimdScalar>(shape, qkv, att, y, dqkv);
            }
        }
    }

    /// <summary>Scratch sizes of one pair: Tp (columns of k^T, v^T and the score rows) and hsP (columns of packed rows).</summary>
    private static (int Tp, int HsP) AttentionPadding<TVector>(AttentionShape shape) where TVector : unmanaged, ISimdFloat<TVector>
    {
        // Tp is a multiple of 16 floats (so of every width, and of 4, so that a block's columns up to
        // i0 + 3 stay inside it), and an odd number of cache lines: the hs rows of k^T, walked down a
        // column, then fall in different L1 sets. At T = 256 a 1 KiB stride put all 64 rows in 4 sets.
        var tp = RoundUp(shape.T, 16);
        if (tp / 16 % 2 == 0) tp += 16;
        return (tp, RoundUp(shape.HeadSize, TVector.Count));
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
        var cursor = Simd.TaskScratch(Aligned(hs * tp) + Aligned((t + 3) * hsP) + Aligned(4 * tp) + Aligned(4 * hsP));
        var keysT = Take(ref cursor, hs * tp);
        var values = Take(ref cursor, (t + 3) * hsP);
        var scores = Take(ref cursor, 4 * tp);
        var outputs = Take(ref cursor, 4 * hsP);
        PackTransposed(qkv + shape.C, stride, t, hs, keysT, tp);
        PackRows(qkv + 2 * shape.C, stride, t, hs, values, hsP);

        for (var i0 = 0; i0 < t; i0 += 4)
        {
            var rows = Math.Min(4, t - i0);
            // Rows past T (in the last block) repeat row i0's query; their results are dropped.
            var q = qkv + (long)i0 * stride;
            ScoresBlock<TVector>(q, rows > 1 ? q + stride : q, rows > 2 ? q + 2 * stride : q, rows > 3 ? q + 3 * stride : q,
                hs, keysT, tp, RoundUp(i0 + 4, TVector.Count), scores);
            for (var r = 0; r < rows; r++)
            {
                var i = i0 + r;
                SoftmaxCausalRow<TVector>(scores + r * tp, i + 1, shape.Scale);
                StoreAttentionRow<TVector>(scores + r * tp, i + 1, att + (long)i * t, t);
            }
            WeightedRowsBlock<TVector>(scores, tp, i0, values, hsP, outputs);
            for (var r = 0; r < rows; r++) CopyFloats<TVector>(outputs + r * hsP, y + (long)(i0 + r) * shape.C, hs);
        }
    }

    /// <summary>One (b, h) pair's backward pass; dy points at its output gradient (row stride C), dqkv like qkv.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AttentionBackwardPair<TVector>(AttentionShape shape, float* qkv, float* att, float* dy, float* dqkv)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        int t = shape.T, hs = shape.HeadSize, stride = 3 * shape.C, c = shape.C;
        var (tp, hsP) = AttentionPadding<TVector>(shape);
        var packed = Aligned((t + 3) * hsP);
        var cursor = Simd.TaskScratch(Aligned(hs * tp) + 5 * packed + 3 * Aligned(4 * tp) + Aligned(4 * hsP));
        var valuesT = Take(ref cursor, hs * tp);
        var keys = Take(ref cursor, (t + 3) * hsP);
        var queries = Take(ref cursor, (t + 3) * hsP);
        var outputGrads = Take(ref cursor, (t + 3) * hsP);
        var keyGrads = Take(ref cursor, (t + 3) * hsP);
        var valueGrads = Take(ref cursor, (t + 3) * hsP);
        var probabilities = Take(ref cursor, 4 * tp);
        var probabilityGrads = Take(ref cursor, 4 * tp);
        var scoreGrads = Take(ref cursor, 4 * tp);
        var queryGrads = Take(ref cursor, 4 * hsP);
        PackTransposed(qkv + 2 * c, stride, t, hs, valuesT, tp);
        PackRows(qkv + c, stride, t, hs, keys, hsP);
        PackRows(qkv, stride, t, hs, queries, hsP);
        PackRows(dy, c, t, hs, outputGrads, hsP);
        new Span<float>(keyGrads, 2 * packed).Clear();

        for (var i0 = 0; i0 < t; i0 += 4)
        {
            var rows = Math.Min(4, t - i0);
            var jEnd = RoundUp(i0 + 4, TVector.Count);
            var g = dy + (long)i0 * c;
            ScoresBlock<TVector>(g, rows > 1 ? g + c : g, rows > 2 ? g + 2 * c : g, rows > 3 ? g + 3 * c : g,
                hs, valuesT, tp, jEnd, probabilityGrads);
            for (var r = 0; r < 4; r++)
            {
                var p = probabilities + r * tp;
                var ds = scoreGrads + r * tp;
                if (r >= rows)
                {
                    new Span<float>(p, jEnd).Clear();
                    new Span<float>(ds, jEnd).Clear();
                    continue;
                }
                var i = i0 + r;
                CopyFloats<TVector>(att + (long)i * t, p, i + 1);
                new Span<float>(p + i + 1, jEnd - i - 1).Clear();
                SoftmaxBackwardRow<TVector>(p, probabilityGrads + r * tp, ds, i + 1, jEnd, shape.Scale);
            }
            WeightedRowsBlock<TVector>(scoreGrads, tp, i0, keys, hsP, queryGrads);
            for (var r = 0; r < rows; r++)
            {
                var dq = dqkv + (long)(i0 + r) * stride;
                Simd.MapRange(default(AddOperator), queryGrads + r * hsP, dq, null, dq, hs);
            }
            RankFourUpdate<TVector>(scoreGrads, tp, queries + i0 * hsP, hsP, keyGrads, i0 + 4);
            RankFourUpdate<TVector>(probabilities, tp, outputGrads + i0 * hsP, hsP, valueGrads, i0 + 4);
        }
        for (var j = 0; j < t; j++)
        {
            var dk = dqkv + (long)j * stride + c;
            Simd.MapRange(default(AddOperator), keyGrads + j * hsP, dk, null, dk, hs);
            var dv = dk + c;
            Simd.MapRange(default(AddOperator), valueGrads + j * hsP, dv, null, dv, hs);
        }
    }

    /// <summary>destination[d * tp + j] = source[j * stride + d] for j &lt; T, d &lt; hs; 0 for T &lt;= j &lt; tp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackTransposed(float* source, int stride, int t, int hs, float* destination, int tp)
    {
        for (var j = 0; j < t; j++)
        {
            var row = source + (long)j * stride;
            for (var d = 0; d < hs; d++) destination[d * tp + j] = row[d];
        }
        for (var d = 0; d < hs; d++) new Span<float>(destination + d * tp + t, tp - t).Clear();
    }

    /// <summary>destination[j * hsP + d] = source[j * stride + d] for j &lt; T, d &lt; hs; 0 elsewhere in (T+3, hsP).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackRows(float* source, int stride, int t, int hs, float* destination, int hsP)
    {
        for (var j = 0; j < t; j++)
        {
            new ReadOnlySpan<float>(source + (long)j * stride, hs).CopyTo(new Span<float>(destination + j * hsP, hs));
            new Span<float>(destination + j * hsP + hs, hsP - hs).Clear();
        }
        new Span<float>(destination + t * hsP, 3 * hsP).Clear();
    }

    /// <summary>destination[0..n) = source[0..n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void CopyFloats<TVector>(float* source, float* destination, int n) where TVector : unmanaged, ISimdFloat<TVector>
    {
        var p = 0;
        for (; p <= n - TVector.Count; p += TVector.Count) TVector.Load(source + p).Store(destination + p);
        for (; p < n; p++) destination[p] = source[p];
    }

    /// <summary>
    /// Four rows of scores: s[r * tp + j] = sum_d q_r[d] kT[d * tp + j] for j &lt; jEnd (a multiple of the width).
    /// q0..q3 are the rows' query (or output-gradient) vectors of hs floats; kT is (hs, tp).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoresBlock<TVector>(float* q0, float* q1, float* q2, float* q3, int hs, float* kT, int tp, int jEnd, float* s)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        var j = 0;
        for (; j + 2 * w <= jEnd; j += 2 * w)
        {
            TVector a00 = TVector.Zero, a01 = TVector.Zero, a10 = TVector.Zero, a11 = TVector.Zero;
            TVector a20 = TVector.Zero, a21 = TVector.Zero, a30 = TVector.Zero, a31 = TVector.Zero;
            var k = kT + j;
            for (var d = 0; d < hs; d++, k += tp)
            {
                var k0 = TVector.Load(k);
                var k1 = TVector.Load(k + w);
                var b = TVector.Create(q0[d]);
                a00 = TVector.MultiplyAdd(b, k0, a00);
                a01 = TVector.MultiplyAdd(b, k1, a01);
                b = TVector.Create(q1[d]);
                a10 = TVector.MultiplyAdd(b, k0, a10);
                a11 = TVector.MultiplyAdd(b, k1, a11);
                b = TVector.Create(q2[d]);
                a20 = TVector.MultiplyAdd(b, k0, a20);
                a21 = TVector.MultiplyAdd(b, k1, a21);
                b = TVector.Create(q3[d]);
                a30 = TVector.MultiplyAdd(b, k0, a30);
                a31 = TVector.MultiplyAdd(b, k1, a31);
            }
            a00.Store(s + j);
            a01.Store(s + j + w);
            a10.Store(s + tp + j);
            a11.Store(s + tp + j + w);
            a20.Store(s + 2 * tp + j);
            a21.Store(s + 2 * tp + j + w);
            a30.Store(s + 3 * tp + j);
            a31.Store(s + 3 * tp + j + w);
        }
        if (j < jEnd)
        {
            TVector a0 = TVector.Zero, a1 = TVector.Zero, a2 = TVector.Zero, a3 = TVector.Zero;
            var k = kT + j;
            for (var d = 0; d < hs; d++, k += tp)
            {
                var k0 = TVector.Load(k);
                a0 = TVector.MultiplyAdd(TVector.Create(q0[d]), k0, a0);
                a1 = TVector.MultiplyAdd(TVector.Create(q1[d]), k0, a1);
                a2 = TVector.MultiplyAdd(TVector.Create(q2[d]), k0, a2);
                a3 = TVector.MultiplyAdd(TVector.Create(q3[d]), k0, a3);
            }
            a0.Store(s + j);
            a1.Store(s + tp + j);
            a2.Store(s + 2 * tp + j);
            a3.Store(s + 3 * tp + j);
        }
    }

    /// <summary>
    /// s[0..n) = softmax(scale s[0..n)) in place, the max subtracted before exp; s[n..) up to the
    /// next whole vector becomes 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxCausalRow<TVector>(float* s, int n, float scale) where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        var end = RoundUp(n, w);
        for (var j = n; j < end; j++) s[j] = float.NegativeInfinity;
        var m = TVector.Load(s);
        for (var j = w; j < end; j += w) m = TVector.Max(m, TVector.Load(s + j));
        var max = TVector.Create(TVector.MaxAcross(m));
        var scaleVector = TVector.Create(scale);
        var sums = TVector.Zero;
        for (var j = 0; j < end; j += w)
        {
            var e = Simd.Exp((TVector.Load(s + j) - max) * scaleVector);
            e.Store(s + j);
            sums += e;
        }
        var inverse = TVector.Create(1f / TVector.Sum(sums));
        for (var j = 0; j < end; j += w) (TVector.Load(s + j) * inverse).Store(s + j);
    }

    /// <summary>An attention row of T floats: p[0..n), then zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StoreAttentionRow<TVector>(float* p, int n, float* row, int t) where TVector : unmanaged, ISimdFloat<TVector>
    {
        CopyFloats<TVector>(p, row, n);
        new Span<float>(row + n, t - n).Clear();
    }

    /// <summary>
    /// ds[j] = scale p[j] (dp[j] - sum_l p[l] dp[l]) for j &lt; n, 0 for n &lt;= j &lt; jEnd; p is 0 from n to jEnd.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SoftmaxBackwardRow<TVector>(float* p, float* dp, float* ds, int n, int jEnd, float scale)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        var end = RoundUp(n, w);
        // dp past the diagonal holds dy . v_j of later positions: never let it reach a sum.
        new Span<float>(dp + n, end - n).Clear();
        var dots = TVector.Zero;
        for (var j = 0; j < end; j += w) dots = TVector.MultiplyAdd(TVector.Load(p + j), TVector.Load(dp + j), dots);
        var dot = TVector.Create(TVector.Sum(dots));
        var scaleVector = TVector.Create(scale);
        for (var j = 0; j < end; j += w) (TVector.Load(p + j) * (TVector.Load(dp + j) - dot) * scaleVector).Store(ds + j);
        new Span<float>(ds + end, jEnd - end).Clear();
    }

    /// <summary>
    /// Four rows o_r = sum_{j &lt;= i0 + r} p[r * tp + j] v[j * hsP + ..] (causal: row r never reads a
    /// column past i0 + r). p is (4, tp), v is (at least i0 + 4, hsP), o is (4, hsP).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void WeightedRowsBlock<TVector>(float* p, int tp, int i0, float* v, int hsP, float* o)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        float* p0 = p, p1 = p + tp, p2 = p + 2 * tp, p3 = p + 3 * tp;
        var d = 0;
        for (; d + 2 * w <= hsP; d += 2 * w)
        {
            TVector a00 = TVector.Zero, a01 = TVector.Zero, a10 = TVector.Zero, a11 = TVector.Zero;
            TVector a20 = TVector.Zero, a21 = TVector.Zero, a30 = TVector.Zero, a31 = TVector.Zero;
            var row = v + d;
            for (var j = 0; j <= i0; j++, row += hsP)
            {
                var v0 = TVector.Load(row);
                var v1 = TVector.Load(row + w);
                var b = TVector.Create(p0[j]);
                a00 = TVector.MultiplyAdd(b, v0, a00);
                a01 = TVector.MultiplyAdd(b, v1, a01);
                b = TVector.Create(p1[j]);
                a10 = TVector.MultiplyAdd(b, v0, a10);
                a11 = TVector.MultiplyAdd(b, v1, a11);
                b = TVector.Create(p2[j]);
                a20 = TVector.MultiplyAdd(b, v0, a20);
                a21 = TVector.MultiplyAdd(b, v1, a21);
                b = TVector.Create(p3[j]);
                a30 = TVector.MultiplyAdd(b, v0, a30);
                a31 = TVector.MultiplyAdd(b, v1, a31);
            }
            // The triangle: column i0 + 1 for rows 1..3, i0 + 2 for rows 2..3, i0 + 3 for row 3.
            var t0 = TVector.Load(row);
            var t1 = TVector.Load(row + w);
            a10 = TVector.MultiplyAdd(TVector.Create(p1[i0 + 1]), t0, a10);
            a11 = TVector.MultiplyAdd(TVector.Create(p1[i0 + 1]), t1, a11);
            a20 = TVector.MultiplyAdd(TVector.Create(p2[i0 + 1]), t0, a20);
            a21 = TVector.MultiplyAdd(TVector.Create(p2[i0 + 1]), t1, a21);
            a30 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 1]), t0, a30);
            a31 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 1]), t1, a31);
            row += hsP;
            t0 = TVector.Load(row);
            t1 = TVector.Load(row + w);
            a20 = TVector.MultiplyAdd(TVector.Create(p2[i0 + 2]), t0, a20);
            a21 = TVector.MultiplyAdd(TVector.Create(p2[i0 + 2]), t1, a21);
            a30 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 2]), t0, a30);
            a31 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 2]), t1, a31);
            row += hsP;
            a30 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 3]), TVector.Load(row), a30);
            a31 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 3]), TVector.Load(row + w), a31);
            a00.Store(o + d);
            a01.Store(o + d + w);
            a10.Store(o + hsP + d);
            a11.Store(o + hsP + d + w);
            a20.Store(o + 2 * hsP + d);
            a21.Store(o + 2 * hsP + d + w);
            a30.Store(o + 3 * hsP + d);
            a31.Store(o + 3 * hsP + d + w);
        }
        if (d < hsP)
        {
            TVector a0 = TVector.Zero, a1 = TVector.Zero, a2 = TVector.Zero, a3 = TVector.Zero;
            var row = v + d;
            for (var j = 0; j <= i0; j++, row += hsP)
            {
                var v0 = TVector.Load(row);
                a0 = TVector.MultiplyAdd(TVector.Create(p0[j]), v0, a0);
                a1 = TVector.MultiplyAdd(TVector.Create(p1[j]), v0, a1);
                a2 = TVector.MultiplyAdd(TVector.Create(p2[j]), v0, a2);
                a3 = TVector.MultiplyAdd(TVector.Create(p3[j]), v0, a3);
            }
            var t0 = TVector.Load(row);
            a1 = TVector.MultiplyAdd(TVector.Create(p1[i0 + 1]), t0, a1);
            a2 = TVector.MultiplyAdd(TVector.Create(p2[i0 + 1]), t0, a2);
            a3 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 1]), t0, a3);
            t0 = TVector.Load(row + hsP);
            a2 = TVector.MultiplyAdd(TVector.Create(p2[i0 + 2]), t0, a2);
            a3 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 2]), t0, a3);
            a3 = TVector.MultiplyAdd(TVector.Create(p3[i0 + 3]), TVector.Load(row + 2 * hsP), a3);
            a0.Store(o + d);
            a1.Store(o + hsP + d);
            a2.Store(o + 2 * hsP + d);
            a3.Store(o + 3 * hsP + d);
        }
    }

    /// <summary>
    /// destination[j * hsP + ..] += sum_r a[r * tp + j] rows[r * hsP + ..] for j &lt; count: a rank-4
    /// update (dk += dS^T q, dv += P^T dy for four query rows). a is (4, tp), rows is (4, hsP),
    /// destination is (count, hsP).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RankFourUpdate<TVector>(float* a, int tp, float* rows, int hsP, float* destination, int count)
        where TVector : unmanaged, ISimdFloat<TVector>
    {
        var w = TVector.Count;
        float* a0 = a, a1 = a + tp, a2 = a + 2 * tp, a3 = a + 3 * tp;
        var d = 0;
        for (; d + 2 * w <= hsP; d += 2 * w)
        {
            var r00 = TVector.Load(rows + d);
            var r01 = TVector.Load(rows + d + w);
            var r10 = TVector.Load(rows + hsP + d);
            var r11 = TVector.Load(rows + hsP + d + w);
            var r20 = TVector.Load(rows + 2 * hsP + d);
            var r21 = TVector.Load(rows + 2 * hsP + d + w);
            var r30 = TVector.Load(rows + 3 * hsP + d);
            var r31 = TVector.Load(rows + 3 * hsP + d + w);
            var target = destination + d;
            for (var j = 0; j < count; j++, target += hsP)
            {
                var x0 = TVector.Load(target);
                var x1 = TVector.Load(target + w);
                var b = TVector.Create(a0[j]);
                x0 = TVector.MultiplyAdd(b, r00, x0);
                x1 = TVector.MultiplyAdd(b, r01, x1);
                b = TVector.Create(a1[j]);
                x0 = TVector.MultiplyAdd(b, r10, x0);
                x1 = TVector.MultiplyAdd(b, r11, x1);
                b = TVector.Create(a2[j]);
                x0 = TVector.MultiplyAdd(b, r20, x0);
                x1 = TVector.MultiplyAdd(b, r21, x1);
                b = TVector.Create(a3[j]);
                x0 = TVector.MultiplyAdd(b, r30, x0);
                x1 = TVector.MultiplyAdd(b, r31, x1);
                x0.Store(target);
                x1.Store(target + w);
            }
        }
        if (d < hsP)
        {
            var r0 = TVector.Load(rows + d);
            var r1 = TVector.Load(rows + hsP + d);
            var r2 = TVector.Load(rows + 2 * hsP + d);
            var r3 = TVector.Load(rows + 3 * hsP + d);
            var target = destination + d;
            for (var j = 0; j < count; j++, target += hsP)
            {
                var x = TVector.Load(target);
                x = TVector.MultiplyAdd(TVector.Create(a0[j]), r0, x);
                x = TVector.MultiplyAdd(TVector.Create(a1[j]), r1, x);
                x = TVector.MultiplyAdd(TVector.Create(a2[j]), r2, x);
                x = TVector.MultiplyAdd(TVector.Create(a3[j]), r3, x);
                x.Store(target);
            }
        }
    }
}
