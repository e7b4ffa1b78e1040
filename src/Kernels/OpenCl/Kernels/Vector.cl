// Vector ops over views of length n. Fill and copy use clEnqueueFillBuffer / clEnqueueCopyBuffer.

// x = alpha x. x is (n).
__kernel void scale(const int n, const float alpha, __global float* x, const int xo)
{
    const int i = get_global_id(0);
    if (i < n) x[xo + i] *= alpha;
}

// y += alpha x. x and y are (n).
__kernel void axpy(const int n, const float alpha, __global const float* x, const int xo, __global float* y, const int yo)
{
    const int i = get_global_id(0);
    if (i < n) y[yo + i] += alpha * x[xo + i];
}

// y = (accumulate ? y : 0) + sum_{s < count} w_s x_s, for up to 8 sources per launch (unused ones are
// never read). Every x_s and y are (n).
__kernel void weighted_sum8(const int n, const int count, const int accumulate,
                            __global const float* x0, const int o0, const float w0,
                            __global const float* x1, const int o1, const float w1,
                            __global const float* x2, const int o2, const float w2,
                            __global const float* x3, const int o3, const float w3,
                            __global const float* x4, const int o4, const float w4,
                            __global const float* x5, const int o5, const float w5,
                            __global const float* x6, const int o6, const float w6,
                            __global const float* x7, const int o7, const float w7,
                            __global float* y, const int yo)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    float sum = accumulate ? y[yo + i] : 0.0f;
    if (count > 0) sum += w0 * x0[o0 + i];
    if (count > 1) sum += w1 * x1[o1 + i];
    if (count > 2) sum += w2 * x2[o2 + i];
    if (count > 3) sum += w3 * x3[o3 + i];
    if (count > 4) sum += w4 * x4[o4 + i];
    if (count > 5) sum += w5 * x5[o5 + i];
    if (count > 6) sum += w6 * x6[o6 + i];
    if (count > 7) sum += w7 * x7[o7 + i];
    y[yo + i] = sum;
}

#ifdef FEDLORA_FP64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double accumulator;
#else
typedef float accumulator;
#endif

// partials[g] = sum of x_i^2 over the elements work-group g visits. Work-item (g, l) of a launch of
// G groups of L items visits i = g L + l, g L + l + G L, ...; the tree in local memory and the host's
// sum over g in a fixed order make the result deterministic. x is (n), partials is (G).
__kernel void sum_of_squares_partial(const int n, __global const float* x, const int xo,
                                     __global accumulator* partials, __local accumulator* scratch)
{
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    accumulator sum = 0;
    for (int i = get_global_id(0); i < n; i += get_global_size(0))
    {
        const accumulator v = x[xo + i];
        sum += v * v;
    }
    scratch[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int stride = size / 2; stride > 0; stride >>= 1)
    {
        if (lid < stride) scratch[lid] += scratch[lid + stride];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) partials[get_group_id(0)] = scratch[0];
}
