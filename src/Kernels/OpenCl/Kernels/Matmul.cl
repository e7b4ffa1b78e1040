// The Matmul family's helpers around the tiled GEMM (MatmulGemm.cl): bias gradients, and the gathers
// and scatters that reduce a rank-index set I to dense GEMMs (low-rank matmul, masked sketch update,
// stacked aggregation). Rank indices live in the backend's int scratch buffer (idx, io).

// One work-item per column j: y[j] += sum_i x[i,j]. x is (rows, cols), y is (cols).
__kernel void column_sum_accumulate(const int rows, const int cols, __global const float* x, const int xo,
                                    __global float* y, const int yo)
{
    const int j = get_global_id(0);
    if (j >= cols) return;
    float sum = 0.0f;
    for (int i = 0; i < rows; i++) sum += x[xo + i * cols + j];
    y[yo + j] += sum;
}

// dst[q,:] = src[idx[q],:]: A_I from A. src is (r,C), dst is (k,C).
__kernel void gather_rows(const int k, const int c, __global const float* src, const int so,
                          __global const int* idx, const int io, __global float* dst, const int dsto)
{
    const int index = get_global_id(0);
    if (index >= k * c) return;
    const int q = index / c;
    dst[dsto + index] = src[so + idx[io + q] * c + index % c];
}

// dst[:,q] = src[:,idx[q]]: B_I from B. src is (O,r), dst is (O,k).
__kernel void gather_columns(const int o, const int r, const int k, __global const float* src, const int so,
                             __global const int* idx, const int io, __global float* dst, const int dsto)
{
    const int index = get_global_id(0);
    if (index >= o * k) return;
    const int q = index % k;
    dst[dsto + index] = src[so + (index / k) * r + idx[io + q]];
}

// dst[idx[q],:] += coefficient src[q,:]. src is (k,C), dst is (r,C); the indices are distinct, so each
// element of dst has one writer.
__kernel void scatter_add_rows(const int k, const int c, const float coefficient, __global const float* src, const int so,
                               __global const int* idx, const int io, __global float* dst, const int dsto)
{
    const int index = get_global_id(0);
    if (index >= k * c) return;
    const int q = index / c;
    dst[dsto + idx[io + q] * c + index % c] += coefficient * src[so + index];
}

// dst[:,idx[q]] += coefficient src[:,q]. src is (O,k), dst is (O,r), distinct indices.
__kernel void scatter_add_columns(const int o, const int r, const int k, const float coefficient,
                                  __global const float* src, const int so, __global const int* idx, const int io,
                                  __global float* dst, const int dsto)
{
    const int index = get_global_id(0);
    if (index >= o * k) return;
    const int q = index % k;
    dst[dsto + (index / k) * r + idx[io + q]] += coefficient * src[so + index];
}

// dst[q,:] = w[q] src[q,:]: diag(w) A_stack. src and dst are (R,C), w is (R).
__kernel void scale_rows(const int rows, const int c, __global const float* w, const int wo,
                         __global const float* src, const int so, __global float* dst, const int dsto)
{
    const int index = get_global_id(0);
    if (index >= rows * c) return;
    dst[dsto + index] = w[wo + index / c] * src[so + index];
}

// dst (K, Np) = B (K,N) with zero columns appended up to Np, where B(k,n) = src[n lds + k] when
// transpose is set (B stored (N,K)) and src[k lds + n] otherwise: the B operand of the CPU GEMM
// (MatmulGemmVector.cl), which reads whole vectors of B's rows. Work-item (col, block, z) writes
// column col of rows [16 block, 16 block + 16): its reads of a transposed B are one contiguous run,
// and consecutive work-items write consecutive addresses. Dimension 2 is the batch: product z reads
// src from (z / batchInner) outer + (z % batchInner) inner further and writes dst from z K Np further.
#define STAGE_ROWS 16
__kernel void stage_b(const int k, const int n, const int np, const int transpose,
                      __global const float* src, const int so, const int lds, __global float* dst, const int dsto,
                      const int batchInner, const int outer, const int inner)
{
    const int col = get_global_id(0);
    if (col >= np) return;
    const int row0 = get_global_id(1) * STAGE_ROWS;
    const int rows = min(STAGE_ROWS, k - row0);
    const int z = get_global_id(2);
    __global const float* s = src + so + (z / batchInner) * outer + (z % batchInner) * inner;
    __global float* d = dst + dsto + z * k * np + row0 * np + col;
    if (col >= n)
    {
        for (int r = 0; r < rows; r++) d[r * np] = 0.0f;
    }
    else if (transpose)
    {
        __global const float* from = s + col * lds + row0;
        for (int r = 0; r < rows; r++) d[r * np] = from[r];
    }
    else
    {
        __global const float* from = s + row0 * lds + col;
        for (int r = 0; r < rows; r++) d[r * np] = from[r * lds];
    }
}
