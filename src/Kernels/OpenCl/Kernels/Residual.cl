// Residual connection: y = a + b, and its backward pass.

// y = a + b. a, b and y are (n).
__kernel void residual_forward(const int n, __global const float* a, const int ao, __global const float* b, const int bo,
                               __global float* y, const int yo)
{
    const int i = get_global_id(0);
    if (i < n) y[yo + i] = a[ao + i] + b[bo + i];
}

// da += dy; db += dy. dy, da and db are (n).
__kernel void residual_backward(const int n, __global const float* dy, const int dyo, __global float* da, const int dao,
                                __global float* db, const int dbo)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float g = dy[dyo + i];
    da[dao + i] += g;
    db[dbo + i] += g;
}
