// Token and position embeddings. Token ids live in the backend's int scratch buffer (tokens, to).

// One work-item per element (r, p) of the (B*T, C) output, r = b T + s:
// y[r,p] = wte[tokens[r],p] + wpe[s,p]. wte is (V,C), wpe is (maxT,C), y is (B,T,C).
__kernel void embedding_forward(const int rows, const int t, const int c, __global const int* tokens, const int to,
                                __global const float* wte, const int wteo, __global const float* wpe, const int wpeo,
                                __global float* y, const int yo)
{
    const int index = get_global_id(0);
    if (index >= rows * c) return;
    const int p = index % c;
    const int r = index / c;
    y[yo + index] = wte[wteo + tokens[to + r] * c + p] + wpe[wpeo + (r % t) * c + p];
}

// Token-table gradient without atomics: the host groups the rows by token id (a counting sort), so that
// one work-item owns each element (u, p) of a distinct token's gradient row and adds that token's rows in
// ascending order: dwte[token_u,p] += sum_{e in [start_u, start_{u+1})} dy[rows[e],p].
// groups holds, in the int scratch: distinct (U ids), then start (U+1 offsets into rows), then rows (B*T).
__kernel void embedding_backward_tokens(const int distinct, const int c, __global const int* groups, const int go,
                                        __global const float* dy, const int dyo, __global float* dwte, const int dwteo)
{
    const int index = get_global_id(0);
    if (index >= distinct * c) return;
    const int p = index % c;
    const int u = index / c;
    __global const int* ids = groups + go;
    __global const int* start = ids + distinct;
    __global const int* rows = start + distinct + 1;
    float sum = dwte[dwteo + ids[u] * c + p];
    for (int e = start[u]; e < start[u + 1]; e++) sum += dy[dyo + rows[e] * c + p];
    dwte[dwteo + ids[u] * c + p] = sum;
}

// One work-item per element (s, p) of the first T rows of the position table:
// dwpe[s,p] += sum_b dy[b,s,p]. dy is (B,T,C).
__kernel void embedding_backward_positions(const int b, const int t, const int c, __global const float* dy, const int dyo,
                                           __global float* dwpe, const int dwpeo)
{
    const int index = get_global_id(0);
    if (index >= t * c) return;
    float sum = dwpe[dwpeo + index];
    for (int bb = 0; bb < b; bb++) sum += dy[dyo + bb * t * c + index];
    dwpe[dwpeo + index] = sum;
}
