// The tiled GEMM of the Matmul family: C = alpha op(A) op(B) (+ bias) (+ C), with A (M,K), B (K,N), C (M,N).
// The host includes this file three times into the Matmul program, each time defining
//   GEMM_NAME  the kernel's name;
//   A_TRANS    0: A(m,k) = a[m lda + k] (A stored (M,K))   1: A(m,k) = a[k lda + m] (A stored (K,M));
//   B_TRANS    0: B(k,n) = b[k ldb + n] (B stored (K,N))   1: B(k,n) = b[n ldb + k] (B stored (N,K));
// and once, in the build options, the tiling: RT (work-items per side of the square work-group) and
// WPT (outputs per work-item per side), so a work-group computes a TS x TS tile of C, TS = RT WPT.
//
// Each step stages a TSK-deep slab of A (TS x TSK) and of B (TSK x TS) in local memory. The loads map
// consecutive work-items to consecutive addresses in whichever dimension is contiguous in global
// memory (coalesced); the +1 padding keeps the transposing stores free of bank conflicts. Work-item
// (tx, ty) owns outputs (ty + i RT, tx + j RT), 0 <= i, j < WPT: its reads of the B slab and its writes
// of C are consecutive across tx.
// flags bit 0: add bias(n) (bias is (N)); bit 1: accumulate into C instead of overwriting it.
// Batches (attention's per-head products) run along dimension 2 of the range: see the offsets below.

#ifndef GEMM_TILING
#define GEMM_TILING
#define TS (RT * WPT)
#define TSK 16
#define GEMM_THREADS (RT * RT)
#define LOADS_PER_THREAD (TSK * TS / GEMM_THREADS)
#endif

__kernel __attribute__((reqd_work_group_size(RT, RT, 1)))
void GEMM_NAME(const int M, const int N, const int K, const float alpha,
               __global const float* a, const int ao, const int lda,
               __global const float* b, const int bo, const int ldb,
               __global float* c, const int co, const int ldc,
               __global const float* bias, const int biaso, const int flags,
               const int batchInner, const int aOuter, const int aInner, const int bOuter, const int bInner,
               const int cOuter, const int cInner)
{
    __local float aTile[TSK][TS + 1];
    __local float bTile[TSK][TS + 1];
    const int tx = get_local_id(0);
    const int ty = get_local_id(1);
    const int tid = ty * RT + tx;
    const int m0 = get_group_id(1) * TS;
    const int n0 = get_group_id(0) * TS;
    // Product z of a batch: its operands start (z / batchInner) outer + (z % batchInner) inner further.
    const int z = get_global_id(2);
    a += ao + (z / batchInner) * aOuter + (z % batchInner) * aInner;
    b += bo + (z / batchInner) * bOuter + (z % batchInner) * bInner;
    c += co + (z / batchInner) * cOuter + (z % batchInner) * cInner;

    float acc[WPT][WPT];
    for (int i = 0; i < WPT; i++)
        for (int j = 0; j < WPT; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += TSK)
    {
        for (int l = 0; l < LOADS_PER_THREAD; l++)
        {
            const int e = tid + l * GEMM_THREADS;
#if A_TRANS
            const int kk = e / TS;
            const int mm = e % TS;
            const int gm = m0 + mm;
            const int gk = k0 + kk;
            aTile[kk][mm] = gm < M && gk < K ? a[gk * lda + gm] : 0.0f;
#else
            const int mm = e / TSK;
            const int kk = e % TSK;
            const int gm = m0 + mm;
            const int gk = k0 + kk;
            aTile[kk][mm] = gm < M && gk < K ? a[gm * lda + gk] : 0.0f;
#endif
#if B_TRANS
            const int nn = e / TSK;
            const int bk = e % TSK;
            const int gn = n0 + nn;
            const int gbk = k0 + bk;
            bTile[bk][nn] = gn < N && gbk < K ? b[gn * ldb + gbk] : 0.0f;
#else
            const int bk = e / TS;
            const int nn = e % TS;
            const int gn = n0 + nn;
            const int gbk = k0 + bk;
            bTile[bk][nn] = gn < N && gbk < K ? b[gbk * ldb + gn] : 0.0f;
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < TSK; kk++)
        {
            float bv[WPT];
            for (int j = 0; j < WPT; j++) bv[j] = bTile[kk][tx + j * RT];
            for (int i = 0; i < WPT; i++)
            {
                const float av = aTile[kk][ty + i * RT];
                for (int j = 0; j < WPT; j++) acc[i][j] += av * bv[j];
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (int i = 0; i < WPT; i++)
    {
        const int gm = m0 + ty + i * RT;
        if (gm >= M) continue;
        for (int j = 0; j < WPT; j++)
        {
            const int gn = n0 + tx + j * RT;
            if (gn >= N) continue;
            float value = alpha * acc[i][j];
            if (flags & 1) value += bias[biaso + gn];
            if (flags & 2) value += c[gm * ldc + gn];
            c[gm * ldc + gn] = value;
        }
    }
}
