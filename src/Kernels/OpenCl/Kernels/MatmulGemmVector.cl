// The GEMM of the Matmul family for CPU devices (PoCL, Intel's and AMD's CPU runtimes):
// C = alpha A B (+ bias) (+ C), A (M,K), B stored (K,N) with row stride ldb, C (M,N).
// The host includes this file twice into the Matmul program, defining GEMM_NAME and
//   A_TRANS  0: A(m,k) = a[m lda + k] (A stored (M,K))   1: A(m,k) = a[k lda + m] (A stored (K,M));
// and sets, in the build options, VW (the device's preferred float vector width: 4, 8 or 16) and RB.
// (A B^T products transpose B into scratch first: see transpose in Matmul.cl.)
//
// One work-item owns an RB x 2VW block of C and keeps it in 2 RB vector registers: per k it loads two
// vectors of B's row k and broadcasts RB elements of A's column k (RB = 6, VW = 16 is the 6x32
// AVX-512 micro-kernel). No local memory and no barriers: on a CPU the compiler keeps the block in
// registers, where the work-group-tiled kernel (MatmulGemm.cl) spills its per-item accumulators.
// Blocks cut by the edges of C take a scalar path.
// flags bit 0: add bias(n) (bias is (N)); bit 1: accumulate into C instead of overwriting it.

#ifndef GEMM_VECTOR_TYPES
#define GEMM_VECTOR_TYPES
#define GEMM_CAT(a, b) a##b
#define GEMM_XCAT(a, b) GEMM_CAT(a, b)
#define floatv GEMM_XCAT(float, VW)
#define vloadv GEMM_XCAT(vload, VW)
#define vstorev GEMM_XCAT(vstore, VW)
#endif

#undef A_AT
#if A_TRANS
#define A_AT(m, k) a[(k) * lda + (m)]
#else
#define A_AT(m, k) a[(m) * lda + (k)]
#endif

__kernel void GEMM_NAME(const int M, const int N, const int K, const float alpha,
                        __global const float* a, const int ao, const int lda,
                        __global const float* b, const int bo, const int ldb,
                        __global float* c, const int co, const int ldc,
                        __global const float* bias, const int biaso, const int flags)
{
    const int j0 = get_global_id(0) * 2 * VW;
    const int i0 = get_global_id(1) * RB;
    if (j0 >= N || i0 >= M) return;
    a += ao;
    b += bo;
    c += co;

    if (i0 + RB <= M && j0 + 2 * VW <= N)
    {
        floatv acc0[RB];
        floatv acc1[RB];
#pragma unroll
        for (int r = 0; r < RB; r++)
        {
            acc0[r] = (floatv)(0.0f);
            acc1[r] = (floatv)(0.0f);
        }
        for (int k = 0; k < K; k++)
        {
            const floatv b0 = vloadv(0, b + k * ldb + j0);
            const floatv b1 = vloadv(0, b + k * ldb + j0 + VW);
#pragma unroll
            for (int r = 0; r < RB; r++)
            {
                const floatv av = (floatv)(A_AT(i0 + r, k));
                acc0[r] += av * b0;
                acc1[r] += av * b1;
            }
        }
#pragma unroll
        for (int r = 0; r < RB; r++)
        {
            __global float* row = c + (i0 + r) * ldc + j0;
            floatv v0 = alpha * acc0[r];
            floatv v1 = alpha * acc1[r];
            if (flags & 1)
            {
                v0 += vloadv(0, bias + biaso + j0);
                v1 += vloadv(0, bias + biaso + j0 + VW);
            }
            if (flags & 2)
            {
                v0 += vloadv(0, row);
                v1 += vloadv(0, row + VW);
            }
            vstorev(v0, 0, row);
            vstorev(v1, 0, row + VW);
        }
        return;
    }

    for (int r = 0; r < RB && i0 + r < M; r++)
    {
        for (int s = 0; s < 2 * VW && j0 + s < N; s++)
        {
            const int i = i0 + r;
            const int j = j0 + s;
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += A_AT(i, k) * b[k * ldb + j];
            float value = alpha * sum;
            if (flags & 1) value += bias[biaso + j];
            if (flags & 2) value += c[i * ldc + j];
            c[i * ldc + j] = value;
        }
    }
}
