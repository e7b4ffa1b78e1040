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
// Edges stay on the vector path: every row of B must have ceil(N / 2VW) 2VW readable columns (the
// host stages B, zero-padded, when N is not a multiple of 2VW), rows past M re-read row M-1, and
// only the block's part inside C is stored.
// flags bit 0: add bias(n) (bias is (N)); bit 1: accumulate into C instead of overwriting it.
// Batches (attention's per-head products) run along dimension 2 of the range: see the offsets below.

#ifndef GEMM_VECTOR_TYPES
#define GEMM_VECTOR_TYPES
#define GEMM_CAT(a, b) a##b
#define GEMM_XCAT(a, b) GEMM_CAT(a, b)
#define floatv GEMM_XCAT(float, VW)
#define vloadv GEMM_XCAT(vload, VW)
#define vstorev GEMM_XCAT(vstore, VW)
#endif

__kernel void GEMM_NAME(const int M, const int N, const int K, const float alpha,
                        __global const float* a, const int ao, const int lda,
                        __global const float* b, const int bo, const int ldb,
                        __global float* c, const int co, const int ldc,
                        __global const float* bias, const int biaso, const int flags,
                        const int batchInner, const int aOuter, const int aInner, const int bOuter, const int bInner,
                        const int cOuter, const int cInner)
{
    const int j0 = get_global_id(0) * 2 * VW;
    const int i0 = get_global_id(1) * RB;
    if (j0 >= N || i0 >= M) return;
    // Product z of a batch: its operands start (z / batchInner) outer + (z % batchInner) inner further.
    const int z = get_global_id(2);
    a += ao + (z / batchInner) * aOuter + (z % batchInner) * aInner;
    b += bo + (z / batchInner) * bOuter + (z % batchInner) * bInner;
    c += co + (z / batchInner) * cOuter + (z % batchInner) * cInner;

    // Where row i0 + r of A starts (A_TRANS 0) or sits within a row of the stored A^T (A_TRANS 1).
    int rowStart[RB];
#pragma unroll
    for (int r = 0; r < RB; r++)
    {
        const int i = min(i0 + r, M - 1);
#if A_TRANS
        rowStart[r] = i;
#else
        rowStart[r] = i * lda;
#endif
    }

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
#if A_TRANS
            const floatv av = (floatv)(a[k * lda + rowStart[r]]);
#else
            const floatv av = (floatv)(a[rowStart[r] + k]);
#endif
            acc0[r] += av * b0;
            acc1[r] += av * b1;
        }
    }

    const int columns = min(2 * VW, N - j0);
#pragma unroll
    for (int r = 0; r < RB; r++)
    {
        if (i0 + r >= M) break;
        __global float* row = c + (i0 + r) * ldc + j0;
        floatv v0 = alpha * acc0[r];
        floatv v1 = alpha * acc1[r];
        if (columns == 2 * VW)
        {
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
        else
        {
            float block[2 * VW];
            vstorev(v0, 0, block);
            vstorev(v1, 0, block + VW);
            for (int s = 0; s < columns; s++)
            {
                float value = block[s];
                if (flags & 1) value += bias[biaso + j0 + s];
                if (flags & 2) value += row[s];
                row[s] = value;
            }
        }
    }
}
