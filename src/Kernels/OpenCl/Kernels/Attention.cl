// Causal multi-head self-attention, as in llm.c, around the Matmul family's batched GEMMs: per head,
// S = Q K^T / sqrt(hs) and Y = P V are GEMMs over strided views of qkv (B,T,3C), and these kernels do
// the causal softmax of each row of S and its backward pass. att and the scores are (B,NH,T,T); a row
// ((b NH + h) T + i) holds query i's scores. One work-group per row.

// att[i,j] = softmax_{j' <= i}(att[i,j']) for j <= i, 0 above the diagonal (the GEMM wrote the scaled
// scores q_i . k_j / sqrt(hs) for every j).
__kernel void attention_softmax(const int t, __global float* att, const int atto, __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    const int i = row % t;
    __global float* a = att + atto + row * t;

    float localMax = -INFINITY;
    for (int j = lid; j <= i; j += size) localMax = fmax(localMax, a[j]);
    const float maxScore = group_max(scratch, localMax);
    float localSum = 0.0f;
    for (int j = lid; j <= i; j += size)
    {
        const float e = exp(a[j] - maxScore);
        a[j] = e;
        localSum += e;
    }
    const float inverse = 1.0f / group_sum(scratch, localSum);
    for (int j = lid; j < t; j += size) a[j] = j <= i ? a[j] * inverse : 0.0f;
}

// The softmax's backward pass, in place: with dP = dY V^T in scores (written by a GEMM),
// scores[i,j] = att[i,j] (dP[i,j] - sum_l att[i,l] dP[i,l]) / sqrt(hs) for j <= i, 0 above the diagonal:
// the gradient of the pre-softmax score, ready for dQ = dS K and dK = dS^T Q.
__kernel void attention_softmax_backward(const int t, const float scale, __global const float* att, const int atto,
                                         __global float* scores, const int scoreso, __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    const int i = row % t;
    __global const float* a = att + atto + row * t;
    __global float* d = scores + scoreso + row * t;

    float localWeighted = 0.0f;
    for (int j = lid; j <= i; j += size) localWeighted += a[j] * d[j];
    const float weighted = group_sum(scratch, localWeighted);
    for (int j = lid; j < t; j += size) d[j] = j <= i ? a[j] * (d[j] - weighted) * scale : 0.0f;
}
