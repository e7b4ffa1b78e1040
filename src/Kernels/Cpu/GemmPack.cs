using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
    /// <summary>Packs rows [i0, i0+rows) of <paramref name="operand"/> (zero rows up to width) over K entries [p0, p0+kc).</summary>
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

    private static void Source(in GemmSource s, int i0, int rows, int width, int p0, int kc, float* dst)
    {
        if (s.RowStride == 1 && s.RowIndex == null)
        {
            // i is contiguous: each K entry is one run of `rows` floats (dy^T, x^T, W as B of dy W).
            for (var p = 0; p < kc; p++)
            {
                var col = s.KIndex == null ? p0 + p : s.KIndex[p0 + p];
                var scale = s.KScale == null ? s.Scale : s.Scale * s.KScale[p0 + p];
                var from = s.Data + (nint)(i0) + col * s.KStride;
                var to = dst + (nint)p * width;
                ScaledCopy(from, to, rows, scale);
                for (var i = rows; i < width; i++) to[i] = 0f;
            }
            return;
        }

        // Each row i is read along p (x, dy, and W as B of x W^T): row-major gather, p outer so
        // that the writes are sequential.
        var rowStarts = stackalloc nint[width];
        for (var i = 0; i < rows; i++)
        {
            rowStarts[i] = (s.RowIndex == null ? i0 + i : s.RowIndex[i0 + i]) * s.RowStride;
        }
        if (s.KStride == 1 && s.KIndex == null && s.KScale == null)
        {
            var data = s.Data + p0;
            var scale = s.Scale;
            for (var p = 0; p < kc; p++)
            {
                var to = dst + (nint)p * width;
                for (var i = 0; i < rows; i++) to[i] = scale * data[rowStarts[i] + p];
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

    /// <summary>sums[i] += sum over p of panel[p*width + i], for the first <paramref name="rows"/> rows (in p order).</summary>
    public static void AddRowSums(float* panel, int rows, int width, int kc, float* sums)
    {
        for (var i = 0; i < rows; i++)
        {
            var sum = 0f;
            for (var p = 0; p < kc; p++) sum += panel[(nint)p * width + i];
            sums[i] += sum;
        }
    }
}
