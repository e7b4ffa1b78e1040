// GEMM packing: operand(i, p) = scale * weight[p] * data[row(i) * rowStride + col(p) * kStride], for
// i along the output and p along K, copied into micro-panels dst[p * width + i] (width MR for a,
// NR for b). Shapes are the caller's: see Gemm.cs.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// One strided source matrix of a GEMM operand: element (i, p) is
/// Scale * KScale[p] * Data[row(i) * RowStride + col(p) * KStride], where row(i) = RowIndex[i] (or i)
/// and col(p) = KIndex[p] (or p). i runs along the output (A's rows or B's columns), p along K.
/// </summary>
/// <remarks>
/// The strides express every transpose the matmul family needs (x W^T, dy W, dy^T x), the index
/// maps express a LoRA rank index set I (A's rows I, B's columns I), and KScale is FLoRA's per-row
/// client weight. Optional pointers are null when absent.
/// </remarks>
internal unsafe struct GemmSource
{
    public float* Data;
    public nint RowStride;
    public nint KStride;
    public int* RowIndex;
    public int* KIndex;
    public float* KScale;
    public float Scale;

    public static GemmSource Strided(float* data, nint rowStride, nint kStride) =>
        new() { Data = data, RowStride = rowStride, KStride = kStride, Scale = 1f };
}

/// <summary>
/// A GEMM operand of K columns made of two sources laid side by side along K: entries p &lt; HeadK
/// come from Head, the rest from Tail (at p - HeadK). A plain matrix has an empty tail; LoRA's
/// [x | s t] and [W | B_I] have the adapter as the tail, so that one GEMM computes both products.
/// </summary>
internal unsafe struct GemmOperand
{
    public GemmSource Head;
    public GemmSource Tail;
    public int HeadK;

    public static GemmOperand Plain(GemmSource source, int k) => new() { Head = source, HeadK = k };

    public static GemmOperand Concat(GemmSource head, int headK, GemmSource tail) =>
        new() { Head = head, HeadK = headK, Tail = tail };
}

/// <summary>
/// Packing: copies a panel of an operand (width rows of i, K entries [p0, p0+kc)) into the
/// micro-kernels' layout, dst[p*width + i], zero-padding rows past the matrix edge so that the
/// micro-kernel always runs at full size. A panel of A has width MR, a panel of B width NR.
/// </summary>
internal static unsafe class GemmPack
{
    /// <summary>
    /// Packs rows [i0, i0+rows) of <paramref name="operand"/> into panels of <paramref name="width"/> rows (the
    /// last zero-padded), panel j at dst + j*panelStride, over K entries [p0, p0+kc). A K-major head (dy^T in
    /// dW) is copied for all full panels at once, K entry by K entry, so that each entry's run of rows is read
    /// whole and in order, with prefetches ahead (<see cref="KMajorPanels"/>).
    /// </summary>
    public static void Panels(in GemmOperand operand, int i0, int rows, int width, int p0, int kc, float* dst, nint panelStride)
    {
        var full = IsKMajor(operand.Head) && p0 + kc <= operand.HeadK ? rows / width : 0;
        if (full > 0)
        {
            var head = operand.Head;
            KMajorPanels(head.Data + i0 + p0 * head.KStride, head.KStride, full, width, kc, dst, panelStride);
        }
        for (var panel = full; panel * width < rows; panel++)
        {
            Panel(operand, i0 + panel * width, Math.Min(width, rows - panel * width), width, p0, kc, dst + panel * panelStride);
        }
    }

    /// <summary>Packs rows [i0, i0+rows) of <paramref name="operand"/> (zero rows up to width) over K entries [p0, p0+kc).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Panel(in GemmOperand operand, int i0, int rows, int width, int p0, int kc, float* dst)
    {
        var headEnd = Math.Min(p0 + kc, operand.HeadK);
        if (headEnd > p0)
        {
            Source(operand.Head, i0, rows, width, p0, headEnd - p0, dst);
        }
        var tailStart = Math.Max(p0, operand.HeadK);
        if (p0 + kc > tailStart)
        {
            Source(operand.Tail, i0, rows, width, tailStart - operand.HeadK, p0 + kc - tailStart, dst + (nint)(tailStart - p0) * width);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Source(in GemmSource s, int i0, int rows, int width, int p0, int kc, float* dst)
    {
        if (s.RowStride == 1 && s.RowIndex == null)
        {
            // i is contiguous: each K entry is one run of `rows` floats (dy^T, x^T, W as B of dy W).
            if (rows == width && IsPlain(s))
            {
                KMajorPanels(s.Data + i0 + p0 * s.KStride, s.KStride, 1, width, kc, dst, 0);
                return;
            }
            for (var p = 0; p < kc; p++)
            {
                var col = s.KIndex == null ? p0 + p : s.KIndex[p0 + p];
                var scale = s.KScale == null ? s.Scale : s.Scale * s.KScale[p0 + p];
                var from = s.Data + i0 + col * s.KStride;
                var to = dst + (nint)p * width;
                ScaledCopy(from, to, rows, scale);
                for (var i = rows; i < width; i++) to[i] = 0f;
            }
            return;
        }

        // Each row i is read along p (W as b of x W^T; x and dy in edge panels): a row-major gather,
        // p outer so that the writes are sequential.
        var rowStarts = stackalloc nint[width];
        for (var i = 0; i < rows; i++)
        {
            rowStarts[i] = (s.RowIndex == null ? i0 + i : s.RowIndex[i0 + i]) * s.RowStride;
        }
        if (s.KStride == 1 && s.KIndex == null && s.KScale == null)
        {
            var data = s.Data + p0;
            var scale = s.Scale;
            var done = 0;
            if (Avx.IsSupported && SimdWidth.Use256)
            {
                for (; done + 8 <= rows; done += 8) Transpose8(data, rowStarts + done, kc, scale, dst + done, width);
            }
            for (var p = 0; p < kc; p++)
            {
                var to = dst + (nint)p * width;
                for (var i = done; i < rows; i++) to[i] = scale * data[rowStarts[i] + p];
                for (var i = rows; i < width; i++) to[i] = 0f;
            }
            return;
        }
        for (var p = 0; p < kc; p++)
        {
            var col = (s.KIndex == null ? p0 + p : s.KIndex[p0 + p]) * s.KStride;
            var scale = s.KScale == null ? s.Scale : s.Scale * s.KScale[p0 + p];
            var to = dst + (nint)p * width;
            for (var i = 0; i < rows; i++) to[i] = scale * s.Data[rowStarts[i] + col];
            for (var i = rows; i < width; i++) to[i] = 0f;
        }
    }

    /// <summary>A plain source whose i run is contiguous (RowStride 1) and K strided: a K-major operand.</summary>
    public static bool IsKMajor(in GemmSource s) => IsPlain(s) && s.RowStride == 1 && s.KStride != 1;

    /// <summary>No index map, no weight, no scale: element (i,p) is Data[i*RowStride + p*KStride].</summary>
    private static bool IsPlain(in GemmSource s) => s.RowIndex == null && s.KIndex == null && s.KScale == null && s.Scale == 1f;

    /// <summary>
    /// Floats in a 4 KB page. Rows (or K entries) a multiple of this apart map onto the same cache sets, and
    /// from this stride on each K entry sits on its own page, where the hardware prefetchers (which stay
    /// within a page) do not follow: <see cref="KMajorPanels"/> then prefetches, and Gemm reads such
    /// operands with fewer rows at a time or packs them.
    /// </summary>
    public const int PageFloats = 1024;

    /// <summary>True when a stride of <paramref name="floats"/> is a whole number of 4 KB pages.</summary>
    public static bool IsPageMultiple(nint floats) => floats % PageFloats == 0;

    /// <summary>
    /// K entries ahead that <see cref="KMajorPanels"/> prefetches. Packing dy^T for dW 2048x512x2048 (16 MB
    /// at an 8 KB stride), one core: 2.2-2.4 ms without prefetches, 1.5-1.6 ms at 8, 16 or 32 entries ahead.
    /// </summary>
    private const int PrefetchDistance = 16;

    /// <summary>
    /// Packs <paramref name="panels"/> full panels of <paramref name="width"/> columns of a K-major source
    /// (columns contiguous, K entries <paramref name="kStride"/> apart) K entry by K entry: each entry's run of
    /// panels*width floats is read once, in order, and split into the panels, dst[ip*panelStride + p*width + i].
    /// From a K stride of <see cref="PageFloats"/>, the run <see cref="PrefetchDistance"/> entries ahead is prefetched.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void KMajorPanels(float* src, nint kStride, int panels, int width, int kc, float* dst, nint panelStride)
    {
        var runBytes = panels * width * sizeof(float);
        var prefetch = Sse.IsSupported && kStride >= PageFloats;
        for (var p = 0; p < kc; p++, src += kStride, dst += width)
        {
            if (prefetch && p + PrefetchDistance < kc)
            {
                var ahead = (byte*)(src + PrefetchDistance * kStride);
                for (var offset = 0; offset < runBytes; offset += 64) Sse.Prefetch0(ahead + offset);
            }
            var from = src;
            var to = dst;
            for (var ip = 0; ip < panels; ip++, from += width, to += panelStride)
            {
                var i = 0;
                if (SimdWidth.Use512)
                {
                    for (; i <= width - 16; i += 16) Vector512.Store(Vector512.Load(from + i), to + i);
                }
                if (SimdWidth.Use256)
                {
                    for (; i <= width - 8; i += 8) Vector256.Store(Vector256.Load(from + i), to + i);
                }
                for (; i < width; i++) to[i] = from[i];
            }
        }
    }

    /// <summary>
    /// Eight rows read along p, written as eight-float columns: dst[p*width + i] = scale * data[rowStarts[i] + p]
    /// for i &lt; 8, in 8x8 blocks transposed in registers (unpack, shuffle, 128-bit permute), the last
    /// kc % 8 entries one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose8(float* data, nint* rowStarts, int kc, float scale, float* dst, int width)
    {
        float* r0 = data + rowStarts[0], r1 = data + rowStarts[1], r2 = data + rowStarts[2], r3 = data + rowStarts[3];
        float* r4 = data + rowStarts[4], r5 = data + rowStarts[5], r6 = data + rowStarts[6], r7 = data + rowStarts[7];
        var s = Vector256.Create(scale);
        var p = 0;
        for (; p + 8 <= kc; p += 8)
        {
            var t0 = Avx.UnpackLow(Vector256.Load(r0 + p), Vector256.Load(r1 + p));
            var t1 = Avx.UnpackHigh(Vector256.Load(r0 + p), Vector256.Load(r1 + p));
            var t2 = Avx.UnpackLow(Vector256.Load(r2 + p), Vector256.Load(r3 + p));
            var t3 = Avx.UnpackHigh(Vector256.Load(r2 + p), Vector256.Load(r3 + p));
            var t4 = Avx.UnpackLow(Vector256.Load(r4 + p), Vector256.Load(r5 + p));
            var t5 = Avx.UnpackHigh(Vector256.Load(r4 + p), Vector256.Load(r5 + p));
            var t6 = Avx.UnpackLow(Vector256.Load(r6 + p), Vector256.Load(r7 + p));
            var t7 = Avx.UnpackHigh(Vector256.Load(r6 + p), Vector256.Load(r7 + p));
            var u0 = Avx.Shuffle(t0, t2, 0x44);
            var u1 = Avx.Shuffle(t0, t2, 0xEE);
            var u2 = Avx.Shuffle(t1, t3, 0x44);
            var u3 = Avx.Shuffle(t1, t3, 0xEE);
            var u4 = Avx.Shuffle(t4, t6, 0x44);
            var u5 = Avx.Shuffle(t4, t6, 0xEE);
            var u6 = Avx.Shuffle(t5, t7, 0x44);
            var u7 = Avx.Shuffle(t5, t7, 0xEE);
            var to = dst + (nint)p * width;
            (s * Avx.Permute2x128(u0, u4, 0x20)).Store(to);
            (s * Avx.Permute2x128(u1, u5, 0x20)).Store(to + width);
            (s * Avx.Permute2x128(u2, u6, 0x20)).Store(to + 2 * width);
            (s * Avx.Permute2x128(u3, u7, 0x20)).Store(to + 3 * width);
            (s * Avx.Permute2x128(u0, u4, 0x31)).Store(to + 4 * width);
            (s * Avx.Permute2x128(u1, u5, 0x31)).Store(to + 5 * width);
            (s * Avx.Permute2x128(u2, u6, 0x31)).Store(to + 6 * width);
            (s * Avx.Permute2x128(u3, u7, 0x31)).Store(to + 7 * width);
        }
        for (; p < kc; p++)
        {
            var to = dst + (nint)p * width;
            to[0] = scale * r0[p];
            to[1] = scale * r1[p];
            to[2] = scale * r2[p];
            to[3] = scale * r3[p];
            to[4] = scale * r4[p];
            to[5] = scale * r5[p];
            to[6] = scale * r6[p];
            to[7] = scale * r7[p];
        }
    }

    /// <summary>to[0..count) = scale * from[0..count), at the widest vector width allowed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaledCopy(float* from, float* to, int count, float scale)
    {
        var i = 0;
        if (SimdWidth.Use512)
        {
            var s = Vector512.Create(scale);
            for (; i <= count - 16; i += 16) (s * Vector512.Load(from + i)).Store(to + i);
        }
        if (SimdWidth.Use256)
        {
            var s = Vector256.Create(scale);
            for (; i <= count - 8; i += 8) (s * Vector256.Load(from + i)).Store(to + i);
        }
        if (SimdWidth.Use128)
        {
            var s = Vector128.Create(scale);
            for (; i <= count - 4; i += 4) (s * Vector128.Load(from + i)).Store(to + i);
        }
        for (; i < count; i++) to[i] = scale * from[i];
    }

    /// <summary>
    /// Floats of K stride from which a K-major source (RowStride 1: dy^T in dW += dy^T x) is packed, not
    /// read in place: at 8 KB per K step every entry of a KC-deep walk sits on a new page (no hardware
    /// prefetch) and a tile's slice maps onto a few L1 and L2 sets. Measured on one core (Zen 5) at
    /// dW 2048x512x2048: packing +5-7%; at strides 512-1536 packing costs 4-15% (its copy is not repaid).
    /// </summary>
    private const int PackedKStride = 2 * PageFloats;

    /// <summary>
    /// True when the micro-kernel can read the source in place, element (i,p) at Data[i*RowStride + p*KStride]
    /// with one of the strides 1: no index map, no weight, no scale, and no long K stride (<see cref="PackedKStride"/>).
    /// </summary>
    public static bool ReadsInPlace(in GemmSource s) =>
        IsPlain(s) && (s.KStride == 1 || (s.RowStride == 1 && s.KStride < PackedKStride));

    /// <summary>sums[i] += sum over p in [p0, p0+kc) of operand(i0+i, p), for i &lt; rows, in p order.</summary>
    public static void AddRowSums(in GemmOperand operand, int i0, int rows, int p0, int kc, float* sums)
    {
        var headEnd = Math.Min(p0 + kc, operand.HeadK);
        if (headEnd > p0) AddRowSums(operand.Head, i0, rows, p0, headEnd - p0, sums);
        var tailStart = Math.Max(p0, operand.HeadK);
        if (p0 + kc > tailStart) AddRowSums(operand.Tail, i0, rows, tailStart - operand.HeadK, p0 + kc - tailStart, sums);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void AddRowSums(in GemmSource s, int i0, int rows, int p0, int kc, float* sums)
    {
        for (var p = p0; p < p0 + kc; p++)
        {
            var col = (s.KIndex == null ? p : s.KIndex[p]) * s.KStride;
            var scale = s.KScale == null ? s.Scale : s.Scale * s.KScale[p];
            if (s.RowStride == 1 && s.RowIndex == null)
            {
                GemmViews.Axpy(scale, s.Data + i0 + col, sums, rows);
                continue;
            }
            for (var i = 0; i < rows; i++)
            {
                sums[i] += scale * s.Data[(s.RowIndex == null ? i0 + i : s.RowIndex[i0 + i]) * s.RowStride + col];
            }
        }
    }
}
