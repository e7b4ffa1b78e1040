// Softmax cross-entropy over V logits per row. Targets live in the backend's int scratch buffer;
// a target of -1 marks a position the loss ignores.

// One work-group per row i: probs[i,:] = softmax(z[i,:]); loss[i] = -log probs[i,target_i], or 0 when
// target_i = -1. z and probs are (N,V), targets and loss (N).
__kernel void crossentropy_forward(const int v, __global const float* z, const int zo, __global const int* targets, const int to,
                                   __global float* probs, const int probso, __global float* loss, const int losso,
                                   __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    __global const float* zr = z + zo + row * v;
    __global float* pr = probs + probso + row * v;

    float localMax = -INFINITY;
    for (int j = lid; j < v; j += size) localMax = fmax(localMax, zr[j]);
    const float maxLogit = group_max(scratch, localMax);
    float localSum = 0.0f;
    for (int j = lid; j < v; j += size) localSum += exp(zr[j] - maxLogit);
    const float sum = group_sum(scratch, localSum);
    const float inverse = 1.0f / sum;
    for (int j = lid; j < v; j += size) pr[j] = exp(zr[j] - maxLogit) * inverse;
    if (lid == 0)
    {
        const int target = targets[to + row];
        loss[losso + row] = target < 0 ? 0.0f : log(sum) + maxLogit - zr[target];
    }
}

// One work-item per element (i, j) of the (N,V) grid: dz[i,j] += scale (probs[i,j] - [j == target_i])
// for rows whose target is not -1.
__kernel void crossentropy_backward(const int n, const int v, __global const float* probs, const int probso,
                                    __global const int* targets, const int to, const float scale,
                                    __global float* dz, const int dzo)
{
    const int index = get_global_id(0);
    if (index >= n * v) return;
    const int target = targets[to + index / v];
    if (target < 0) return;
    const float indicator = index % v == target ? 1.0f : 0.0f;
    dz[dzo + index] += scale * (probs[probso + index] - indicator);
}
