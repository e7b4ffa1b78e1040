// Causal multi-head self-attention, as in llm.c. qkv is (B,T,3C) holding q, k, v; head h of
// position t uses channels [h hs, (h+1) hs) of each third, hs = C/NH. att is (B,NH,T,T).

// One work-group per (b, h, i) query row, rows numbered ((b NH + h) T + i):
// att[i,j] = softmax_j(q_i . k_j / sqrt(hs)) for j <= i, 0 above the diagonal; y_i = sum_j att[i,j] v_j.
// y is (B,T,C).
__kernel void attention_forward(const int t, const int c, const int heads,
                                __global const float* qkv, const int qkvo, __global float* att, const int atto,
                                __global float* y, const int yo, __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    const int i = row % t;
    const int h = (row / t) % heads;
    const int b = row / (t * heads);
    const int hs = c / heads;
    const float scale = 1.0f / sqrt((float)hs);
    __global const float* q = qkv + qkvo + (b * t + i) * 3 * c + h * hs;
    __global const float* keys = qkv + qkvo + b * t * 3 * c + c + h * hs;
    __global const float* values = qkv + qkvo + b * t * 3 * c + 2 * c + h * hs;
    __global float* a = att + atto + row * t;

    float localMax = -INFINITY;
    for (int j = lid; j < t; j += size)
    {
        if (j <= i)
        {
            float dot = 0.0f;
            for (int d = 0; d < hs; d++) dot += q[d] * keys[j * 3 * c + d];
            const float score = dot * scale;
            a[j] = score;
            localMax = fmax(localMax, score);
        }
        else
        {
            a[j] = 0.0f;
        }
    }
    const float maxScore = group_max(scratch, localMax);
    float localSum = 0.0f;
    for (int j = lid; j <= i; j += size)
    {
        const float e = exp(a[j] - maxScore);
        a[j] = e;
        localSum += e;
    }
    const float inverse = 1.0f / group_sum(scratch, localSum);
    for (int j = lid; j <= i; j += size) a[j] *= inverse;
    // The output reads every a[j], written by other work-items of this group.
    barrier(CLK_GLOBAL_MEM_FENCE);
    for (int d = lid; d < hs; d += size)
    {
        float acc = 0.0f;
        for (int j = 0; j <= i; j++) acc += a[j] * values[j * 3 * c + d];
        y[yo + (b * t + i) * c + h * hs + d] = acc;
    }
}

// Backward, step 1. One work-group per (b, h, i) row: with datt[j] = dy_i . v_j,
// dpre[i,j] = att[i,j] (datt[j] - sum_l att[i,l] datt[l]) / sqrt(hs) for j <= i (the gradient of the
// pre-softmax score). dy is (B,T,C); dpre is (B,NH,T,T), entries above the diagonal are not written.
__kernel void attention_backward_scores(const int t, const int c, const int heads,
                                        __global const float* qkv, const int qkvo, __global const float* att, const int atto,
                                        __global const float* dy, const int dyo, __global float* dpre, const int dpreo,
                                        __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    const int i = row % t;
    const int h = (row / t) % heads;
    const int b = row / (t * heads);
    const int hs = c / heads;
    const float scale = 1.0f / sqrt((float)hs);
    __global const float* g = dy + dyo + (b * t + i) * c + h * hs;
    __global const float* values = qkv + qkvo + b * t * 3 * c + 2 * c + h * hs;
    __global const float* a = att + atto + row * t;
    __global float* dp = dpre + dpreo + row * t;

    float localWeighted = 0.0f;
    for (int j = lid; j <= i; j += size)
    {
        float dot = 0.0f;
        for (int d = 0; d < hs; d++) dot += g[d] * values[j * 3 * c + d];
        dp[j] = dot;
        localWeighted += a[j] * dot;
    }
    const float weighted = group_sum(scratch, localWeighted);
    for (int j = lid; j <= i; j += size) dp[j] = a[j] * (dp[j] - weighted) * scale;
}

// Backward, step 2. One work-item per element (b, s, ch) of the (B,T,C) grid, ch = h hs + d, writing
// the three gradients of position s, channel ch:
//   dq[s] += sum_{j <= s} dpre[s,j] k_j;  dk[s] += sum_{i >= s} dpre[i,s] q_i;  dv[s] += sum_{i >= s} att[i,s] dy_i.
// dqkv is (B,T,3C).
__kernel void attention_backward_qkv(const int b, const int t, const int c, const int heads,
                                     __global const float* qkv, const int qkvo, __global const float* att, const int atto,
                                     __global const float* dy, const int dyo, __global const float* dpre, const int dpreo,
                                     __global float* dqkv, const int dqkvo)
{
    const int index = get_global_id(0);
    if (index >= b * t * c) return;
    const int ch = index % c;
    const int s = (index / c) % t;
    const int bb = index / (c * t);
    const int hs = c / heads;
    const int h = ch / hs;
    __global const float* base = qkv + qkvo + bb * t * 3 * c;
    __global const float* probabilities = att + atto + (bb * heads + h) * t * t;
    __global const float* scores = dpre + dpreo + (bb * heads + h) * t * t;

    float dq = 0.0f;
    for (int j = 0; j <= s; j++) dq += scores[s * t + j] * base[j * 3 * c + c + ch];
    float dk = 0.0f;
    float dv = 0.0f;
    for (int i = s; i < t; i++)
    {
        dk += scores[i * t + s] * base[i * 3 * c + ch];
        dv += probabilities[i * t + s] * dy[dyo + (bb * t + i) * c + ch];
    }
    __global float* out = dqkv + dqkvo + (bb * t + s) * 3 * c;
    out[ch] += dq;
    out[c + ch] += dk;
    out[2 * c + ch] += dv;
}
