// GEMM micro-kernels: c(MR,NR) (+)= a(MR,kc) b(kc,NR) [+ bias(NR)], accumulated in registers.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// GEMM micro-kernels: c(MR,NR) (+)= a(MR,kc) b(kc,NR) held in registers, one per vector width.
/// a is read in place through strides, element (i,p) at a[i*ars + p*aks]: a packed panel has
/// (ars, aks) = (1, MR), a row-major x or dy (lda, 1), a transposed dy^T (1, lda); then kcTail more K
/// entries come from the packed panel aTail (LoRA's s t or s u, appended to K). b is a packed
/// micro-panel of kc + kcTail rows of NR floats (element (p,j) at b[p*NR + j]); c is row-major with
/// row stride ldc. Each k step broadcasts MR values of a and multiplies them with the NR-wide row
/// of b, so the MR x NR tile needs MR*NR/lanes accumulators that never leave the registers.
/// </summary>
/// <remarks>
/// Epilogue: accumulate adds the tile to c (the backward passes, and every K block after the first);
/// otherwise c = tile + bias(NR) (bias may be null). Reading a in place costs two adds per k step
/// (checked in the JIT's output) and saves packing x or dy, which at O or C = 128 costs as much as
/// 15% of the GEMM. Shapes, measured on Zen 5 with kc = 256 and the
/// panels in L1 (GFLOP/s on one core): 6x32 224, 8x32 236, 12x32 232, 14x32 236. 8x32 wins at the
/// model's shapes because every N, O and C there is a multiple of 8 (no edge tiles) and its
/// 16 accumulators leave registers for the loads.
/// </remarks>
internal static unsafe class GemmKernels
{
    /// <summary>8x32 on Vector512: 16 accumulators, 2 loads of b and 8 broadcasts of a per k step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel8x32(int kc, float* a, nint ars, nint aks, int kcTail, float* aTail, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        var ars2 = 2 * ars;
        var ars3 = 3 * ars;
        var a4 = a + 4 * ars;
        for (var pass = 0; pass < 2; pass++)
        {
            for (var p = 0; p < kc; p++)
            {
                var b0 = Vector512.Load(b);
                var b1 = Vector512.Load(b + 16);
                var x = Vector512.Create(a[0]);
                c00 = Vector512.FusedMultiplyAdd(x, b0, c00);
                c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
                x = Vector512.Create(a[ars]);
                c10 = Vector512.FusedMultiplyAdd(x, b0, c10);
                c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
                x = Vector512.Create(a[ars2]);
                c20 = Vector512.FusedMultiplyAdd(x, b0, c20);
                c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
                x = Vector512.Create(a[ars3]);
                c30 = Vector512.FusedMultiplyAdd(x, b0, c30);
                c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
                x = Vector512.Create(a4[0]);
                c40 = Vector512.FusedMultiplyAdd(x, b0, c40);
                c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
                x = Vector512.Create(a4[ars]);
                c50 = Vector512.FusedMultiplyAdd(x, b0, c50);
                c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
                x = Vector512.Create(a4[ars2]);
                c60 = Vector512.FusedMultiplyAdd(x, b0, c60);
                c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
                x = Vector512.Create(a4[ars3]);
                c70 = Vector512.FusedMultiplyAdd(x, b0, c70);
                c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
                a += aks;
                a4 += aks;
                b += 32;
            }
            if (kcTail == 0) break;
            kc = kcTail;
            kcTail = 0;
            a = aTail;
            ars = 1;
            aks = 8;
            ars2 = 2;
            ars3 = 3;
            a4 = aTail + 4;
        }
        Store512(c, c00, c01, bias, accumulate);
        Store512(c + ldc, c10, c11, bias, accumulate);
        Store512(c + 2 * ldc, c20, c21, bias, accumulate);
        Store512(c + 3 * ldc, c30, c31, bias, accumulate);
        Store512(c + 4 * ldc, c40, c41, bias, accumulate);
        Store512(c + 5 * ldc, c50, c51, bias, accumulate);
        Store512(c + 6 * ldc, c60, c61, bias, accumulate);
        Store512(c + 7 * ldc, c70, c71, bias, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(float* c, Vector512<float> lo, Vector512<float> hi, float* bias, bool accumulate)
    {
        if (accumulate)
        {
            lo += Vector512.Load(c);
            hi += Vector512.Load(c + 16);
        }
        else if (bias != null)
        {
            lo += Vector512.Load(bias);
            hi += Vector512.Load(bias + 16);
        }
        lo.Store(c);
        hi.Store(c + 16);
    }

    /// <summary>
    /// 16x16 on Vector512, for GEMMs of at most 16 columns (LoRA's t = x A_I^T and u = dy B_I, k &lt;= 16):
    /// 16 accumulators of one vector each, 1 load of b and 16 broadcasts of a per k step; a 32-wide
    /// tile would waste half its lanes or more there.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel16x16(int kc, float* a, nint ars, nint aks, int kcTail, float* aTail, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        Vector512<float> c8 = default, c9 = default, ca = default, cb = default, cc = default, cd = default, ce = default, cf = default;
        var ars2 = 2 * ars;
        var ars3 = 3 * ars;
        var a4 = a + 4 * ars;
        var a8 = a + 8 * ars;
        var a12 = a + 12 * ars;
        for (var pass = 0; pass < 2; pass++)
        {
            for (var p = 0; p < kc; p++)
            {
                var b0 = Vector512.Load(b);
                var x = Vector512.Create(a[0]);
                c0 = Vector512.FusedMultiplyAdd(x, b0, c0);
                x = Vector512.Create(a[ars]);
                c1 = Vector512.FusedMultiplyAdd(x, b0, c1);
                x = Vector512.Create(a[ars2]);
                c2 = Vector512.FusedMultiplyAdd(x, b0, c2);
                x = Vector512.Create(a[ars3]);
                c3 = Vector512.FusedMultiplyAdd(x, b0, c3);
                x = Vector512.Create(a4[0]);
                c4 = Vector512.FusedMultiplyAdd(x, b0, c4);
                x = Vector512.Create(a4[ars]);
                c5 = Vector512.FusedMultiplyAdd(x, b0, c5);
                x = Vector512.Create(a4[ars2]);
                c6 = Vector512.FusedMultiplyAdd(x, b0, c6);
                x = Vector512.Create(a4[ars3]);
                c7 = Vector512.FusedMultiplyAdd(x, b0, c7);
                x = Vector512.Create(a8[0]);
                c8 = Vector512.FusedMultiplyAdd(x, b0, c8);
                x = Vector512.Create(a8[ars]);
                c9 = Vector512.FusedMultiplyAdd(x, b0, c9);
                x = Vector512.Create(a8[ars2]);
                ca = Vector512.FusedMultiplyAdd(x, b0, ca);
                x = Vector512.Create(a8[ars3]);
                cb = Vector512.FusedMultiplyAdd(x, b0, cb);
                x = Vector512.Create(a12[0]);
                cc = Vector512.FusedMultiplyAdd(x, b0, cc);
                x = Vector512.Create(a12[ars]);
                cd = Vector512.FusedMultiplyAdd(x, b0, cd);
                x = Vector512.Create(a12[ars2]);
                ce = Vector512.FusedMultiplyAdd(x, b0, ce);
                x = Vector512.Create(a12[ars3]);
                cf = Vector512.FusedMultiplyAdd(x, b0, cf);
                a += aks;
                a4 += aks;
                a8 += aks;
                a12 += aks;
                b += 16;
            }
            if (kcTail == 0) break;
            kc = kcTail;
            kcTail = 0;
            a = aTail;
            ars = 1;
            aks = 16;
            ars2 = 2;
            ars3 = 3;
            a4 = aTail + 4;
            a8 = aTail + 8;
            a12 = aTail + 12;
        }
        Store512(c, c0, bias, accumulate);
        Store512(c + 1 * ldc, c1, bias, accumulate);
        Store512(c + 2 * ldc, c2, bias, accumulate);
        Store512(c + 3 * ldc, c3, bias, accumulate);
        Store512(c + 4 * ldc, c4, bias, accumulate);
        Store512(c + 5 * ldc, c5, bias, accumulate);
        Store512(c + 6 * ldc, c6, bias, accumulate);
        Store512(c + 7 * ldc, c7, bias, accumulate);
        Store512(c + 8 * ldc, c8, bias, accumulate);
        Store512(c + 9 * ldc, c9, bias, accumulate);
        Store512(c + 10 * ldc, ca, bias, accumulate);
        Store512(c + 11 * ldc, cb, bias, accumulate);
        Store512(c + 12 * ldc, cc, bias, accumulate);
        Store512(c + 13 * ldc, cd, bias, accumulate);
        Store512(c + 14 * ldc, ce, bias, accumulate);
        Store512(c + 15 * ldc, cf, bias, accumulate);
    }

    /// <summary>
    /// 8x16 on Vector512, Kernel16x16's half for an a read in place with rows a multiple of 4 KB apart
    /// (Gemm.NarrowFewRows): 8 accumulators, 1 load of b and 8 broadcasts of a per k step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel8x16(int kc, float* a, nint ars, nint aks, int kcTail, float* aTail, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        var ars2 = 2 * ars;
        var ars3 = 3 * ars;
        var a4 = a + 4 * ars;
        for (var pass = 0; pass < 2; pass++)
        {
            for (var p = 0; p < kc; p++)
            {
                var b0 = Vector512.Load(b);
                c0 = Vector512.FusedMultiplyAdd(Vector512.Create(a[0]), b0, c0);
                c1 = Vector512.FusedMultiplyAdd(Vector512.Create(a[ars]), b0, c1);
                c2 = Vector512.FusedMultiplyAdd(Vector512.Create(a[ars2]), b0, c2);
                c3 = Vector512.FusedMultiplyAdd(Vector512.Create(a[ars3]), b0, c3);
                c4 = Vector512.FusedMultiplyAdd(Vector512.Create(a4[0]), b0, c4);
                c5 = Vector512.FusedMultiplyAdd(Vector512.Create(a4[ars]), b0, c5);
                c6 = Vector512.FusedMultiplyAdd(Vector512.Create(a4[ars2]), b0, c6);
                c7 = Vector512.FusedMultiplyAdd(Vector512.Create(a4[ars3]), b0, c7);
                a += aks;
                a4 += aks;
                b += 16;
            }
            if (kcTail == 0) break;
            kc = kcTail;
            kcTail = 0;
            a = aTail;
            ars = 1;
            aks = 8;
            ars2 = 2;
            ars3 = 3;
            a4 = aTail + 4;
        }
        Store512(c, c0, bias, accumulate);
        Store512(c + 1 * ldc, c1, bias, accumulate);
        Store512(c + 2 * ldc, c2, bias, accumulate);
        Store512(c + 3 * ldc, c3, bias, accumulate);
        Store512(c + 4 * ldc, c4, bias, accumulate);
        Store512(c + 5 * ldc, c5, bias, accumulate);
        Store512(c + 6 * ldc, c6, bias, accumulate);
        Store512(c + 7 * ldc, c7, bias, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store512(float* c, Vector512<float> v, float* bias, bool accumulate)
    {
        if (accumulate)
        {
            v += Vector512.Load(c);
        }
        else if (bias != null)
        {
            v += Vector512.Load(bias);
        }
        v.Store(c);
    }

    /// <summary>6x16 on Vector256 (the classic AVX2 shape: 12 accumulators fit the 16 ymm registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel6x16(int kc, float* a, nint ars, nint aks, int kcTail, float* aTail, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        var ars2 = 2 * ars;
        var ars3 = 3 * ars;
        var a4 = a + 4 * ars;
        for (var pass = 0; pass < 2; pass++)
        {
            for (var p = 0; p < kc; p++)
            {
                var b0 = Vector256.Load(b);
                var b1 = Vector256.Load(b + 8);
                var x = Vector256.Create(a[0]);
                c00 = Vector256.FusedMultiplyAdd(x, b0, c00);
                c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
                x = Vector256.Create(a[ars]);
                c10 = Vector256.FusedMultiplyAdd(x, b0, c10);
                c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
                x = Vector256.Create(a[ars2]);
                c20 = Vector256.FusedMultiplyAdd(x, b0, c20);
                c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
                x = Vector256.Create(a[ars3]);
                c30 = Vector256.FusedMultiplyAdd(x, b0, c30);
                c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
                x = Vector256.Create(a4[0]);
                c40 = Vector256.FusedMultiplyAdd(x, b0, c40);
                c41 = Vector256.FusedMultiplyAdd(x, b1, c41);
                x = Vector256.Create(a4[ars]);
                c50 = Vector256.FusedMultiplyAdd(x, b0, c50);
                c51 = Vector256.FusedMultiplyAdd(x, b1, c51);
                a += aks;
                a4 += aks;
                b += 16;
            }
            if (kcTail == 0) break;
            kc = kcTail;
            kcTail = 0;
            a = aTail;
            ars = 1;
            aks = 6;
            ars2 = 2;
            ars3 = 3;
            a4 = aTail + 4;
        }
        Store256(c, c00, c01, bias, accumulate);
        Store256(c + ldc, c10, c11, bias, accumulate);
        Store256(c + 2 * ldc, c20, c21, bias, accumulate);
        Store256(c + 3 * ldc, c30, c31, bias, accumulate);
        Store256(c + 4 * ldc, c40, c41, bias, accumulate);
        Store256(c + 5 * ldc, c50, c51, bias, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store256(float* c, Vector256<float> lo, Vector256<float> hi, float* bias, bool accumulate)
    {
        if (accumulate)
        {
            lo += Vector256.Load(c);
            hi += Vector256.Load(c + 8);
        }
        else if (bias != null)
        {
            lo += Vector256.Load(bias);
            hi += Vector256.Load(bias + 8);
        }
        lo.Store(c);
        hi.Store(c + 8);
    }

    /// <summary>6x8 on Vector128: 12 accumulators.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel6x8(int kc, float* a, nint ars, nint aks, int kcTail, float* aTail, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector128<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector128<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        var ars2 = 2 * ars;
        var ars3 = 3 * ars;
        var a4 = a + 4 * ars;
        for (var pass = 0; pass < 2; pass++)
        {
            for (var p = 0; p < kc; p++)
            {
                var b0 = Vector128.Load(b);
                var b1 = Vector128.Load(b + 4);
                var x = Vector128.Create(a[0]);
                c00 = Vector128.FusedMultiplyAdd(x, b0, c00);
                c01 = Vector128.FusedMultiplyAdd(x, b1, c01);
                x = Vector128.Create(a[ars]);
                c10 = Vector128.FusedMultiplyAdd(x, b0, c10);
                c11 = Vector128.FusedMultiplyAdd(x, b1, c11);
                x = Vector128.Create(a[ars2]);
                c20 = Vector128.FusedMultiplyAdd(x, b0, c20);
                c21 = Vector128.FusedMultiplyAdd(x, b1, c21);
                x = Vector128.Create(a[ars3]);
                c30 = Vector128.FusedMultiplyAdd(x, b0, c30);
                c31 = Vector128.FusedMultiplyAdd(x, b1, c31);
                x = Vector128.Create(a4[0]);
                c40 = Vector128.FusedMultiplyAdd(x, b0, c40);
                c41 = Vector128.FusedMultiplyAdd(x, b1, c41);
                x = Vector128.Create(a4[ars]);
                c50 = Vector128.FusedMultiplyAdd(x, b0, c50);
                c51 = Vector128.FusedMultiplyAdd(x, b1, c51);
                a += aks;
                a4 += aks;
                b += 8;
            }
            if (kcTail == 0) break;
            kc = kcTail;
            kcTail = 0;
            a = aTail;
            ars = 1;
            aks = 6;
            ars2 = 2;
            ars3 = 3;
            a4 = aTail + 4;
        }
        Store128(c, c00, c01, bias, accumulate);
        Store128(c + ldc, c10, c11, bias, accumulate);
        Store128(c + 2 * ldc, c20, c21, bias, accumulate);
        Store128(c + 3 * ldc, c30, c31, bias, accumulate);
        Store128(c + 4 * ldc, c40, c41, bias, accumulate);
        Store128(c + 5 * ldc, c50, c51, bias, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store128(float* c, Vector128<float> lo, Vector128<float> hi, float* bias, bool accumulate)
    {
        if (accumulate)
        {
            lo += Vector128.Load(c);
            hi += Vector128.Load(c + 4);
        }
        else if (bias != null)
        {
            lo += Vector128.Load(bias);
            hi += Vector128.Load(bias + 4);
        }
        lo.Store(c);
        hi.Store(c + 4);
    }

    /// <summary>4x4 in scalar registers: the path for FEDLORA_SIMD=scalar and CPUs without SIMD.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel4x4(int kc, float* a, nint ars, nint aks, int kcTail, float* aTail, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        var ars2 = 2 * ars;
        var ars3 = 3 * ars;
        for (var pass = 0; pass < 2; pass++)
        {
            for (var p = 0; p < kc; p++)
            {
                float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
                var x = a[0];
                c00 += x * b0; c01 += x * b1; c02 += x * b2; c03 += x * b3;
                x = a[ars];
                c10 += x * b0; c11 += x * b1; c12 += x * b2; c13 += x * b3;
                x = a[ars2];
                c20 += x * b0; c21 += x * b1; c22 += x * b2; c23 += x * b3;
                x = a[ars3];
                c30 += x * b0; c31 += x * b1; c32 += x * b2; c33 += x * b3;
                a += aks;
                b += 4;
            }
            if (kcTail == 0) break;
            kc = kcTail;
            kcTail = 0;
            a = aTail;
            ars = 1;
            aks = 4;
            ars2 = 2;
            ars3 = 3;
        }
        StoreScalar(c, c00, c01, c02, c03, bias, accumulate);
        StoreScalar(c + ldc, c10, c11, c12, c13, bias, accumulate);
        StoreScalar(c + 2 * ldc, c20, c21, c22, c23, bias, accumulate);
        StoreScalar(c + 3 * ldc, c30, c31, c32, c33, bias, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreScalar(float* c, float v0, float v1, float v2, float v3, float* bias, bool accumulate)
    {
        if (accumulate)
        {
            c[0] += v0; c[1] += v1; c[2] += v2; c[3] += v3;
        }
        else if (bias != null)
        {
            c[0] = v0 + bias[0]; c[1] = v1 + bias[1]; c[2] = v2 + bias[2]; c[3] = v3 + bias[3];
        }
        else
        {
            c[0] = v0; c[1] = v1; c[2] = v2; c[3] = v3;
        }
    }
}
