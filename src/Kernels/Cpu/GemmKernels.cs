using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// GEMM micro-kernels: c(MR,NR) (+)= a(MR,kc) b(kc,NR) held in registers, one per vector width.
/// a is a packed A micro-panel, kc columns of MR floats (element (i,p) at a[p*MR + i]); b is a packed
/// B micro-panel, kc rows of NR floats (element (p,j) at b[p*NR + j]); c is row-major with row
/// stride ldc. Each k step broadcasts MR values of a and multiplies them with the NR-wide row of b,
/// so the MR x NR tile needs MR*NR/lanes accumulators that never leave the registers.
/// </summary>
/// <remarks>
/// Epilogue: accumulate adds the tile to c (the backward passes, and every K block after the first);
/// otherwise c = tile + bias(NR) (bias may be null). Shapes, measured on Zen 5 with kc = 256 and the
/// panels in L1 (GFLOP/s on one core): 6x32 224, 8x32 236, 12x32 232, 14x32 236. 8x32 wins at the
/// model's shapes because every N, O and C there is a multiple of 8 (no edge tiles) and its
/// 16 accumulators leave registers for the loads.
/// </remarks>
internal static unsafe class GemmKernels
{
    /// <summary>8x32 on Vector512: 16 accumulators, 2 loads of b and 8 broadcasts of a per k step.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel8x32(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (var p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var x = Vector512.Create(a[0]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00);
            c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a[1]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a[2]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a[3]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a[4]);
            c40 = Vector512.FusedMultiplyAdd(x, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a[5]);
            c50 = Vector512.FusedMultiplyAdd(x, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a[6]);
            c60 = Vector512.FusedMultiplyAdd(x, b0, c60);
            c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a[7]);
            c70 = Vector512.FusedMultiplyAdd(x, b0, c70);
            c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
            a += 8;
            b += 32;
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

    /// <summary>6x16 on Vector256 (the classic AVX2 shape: 12 accumulators fit the 16 ymm registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Kernel6x16(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector256<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (var p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            var x = Vector256.Create(a[0]);
            c00 = Vector256.FusedMultiplyAdd(x, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
            x = Vector256.Create(a[1]);
            c10 = Vector256.FusedMultiplyAdd(x, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
            x = Vector256.Create(a[2]);
            c20 = Vector256.FusedMultiplyAdd(x, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
            x = Vector256.Create(a[3]);
            c30 = Vector256.FusedMultiplyAdd(x, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
            x = Vector256.Create(a[4]);
            c40 = Vector256.FusedMultiplyAdd(x, b0, c40);
            c41 = Vector256.FusedMultiplyAdd(x, b1, c41);
            x = Vector256.Create(a[5]);
            c50 = Vector256.FusedMultiplyAdd(x, b0, c50);
            c51 = Vector256.FusedMultiplyAdd(x, b1, c51);
            a += 6;
            b += 16;
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
    public static void Kernel6x8(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        Vector128<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default;
        Vector128<float> c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (var p = 0; p < kc; p++)
        {
            var b0 = Vector128.Load(b);
            var b1 = Vector128.Load(b + 4);
            var x = Vector128.Create(a[0]);
            c00 = Vector128.FusedMultiplyAdd(x, b0, c00);
            c01 = Vector128.FusedMultiplyAdd(x, b1, c01);
            x = Vector128.Create(a[1]);
            c10 = Vector128.FusedMultiplyAdd(x, b0, c10);
            c11 = Vector128.FusedMultiplyAdd(x, b1, c11);
            x = Vector128.Create(a[2]);
            c20 = Vector128.FusedMultiplyAdd(x, b0, c20);
            c21 = Vector128.FusedMultiplyAdd(x, b1, c21);
            x = Vector128.Create(a[3]);
            c30 = Vector128.FusedMultiplyAdd(x, b0, c30);
            c31 = Vector128.FusedMultiplyAdd(x, b1, c31);
            x = Vector128.Create(a[4]);
            c40 = Vector128.FusedMultiplyAdd(x, b0, c40);
            c41 = Vector128.FusedMultiplyAdd(x, b1, c41);
            x = Vector128.Create(a[5]);
            c50 = Vector128.FusedMultiplyAdd(x, b0, c50);
            c51 = Vector128.FusedMultiplyAdd(x, b1, c51);
            a += 6;
            b += 8;
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
    public static void Kernel4x4(int kc, float* a, float* b, float* c, nint ldc, float* bias, bool accumulate)
    {
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (var p = 0; p < kc; p++)
        {
            float b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
            var x = a[0];
            c00 += x * b0; c01 += x * b1; c02 += x * b2; c03 += x * b3;
            x = a[1];
            c10 += x * b0; c11 += x * b1; c12 += x * b2; c13 += x * b3;
            x = a[2];
            c20 += x * b0; c21 += x * b1; c22 += x * b2; c23 += x * b3;
            x = a[3];
            c30 += x * b0; c31 += x * b1; c32 += x * b2; c33 += x * b3;
            a += 4;
            b += 4;
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
