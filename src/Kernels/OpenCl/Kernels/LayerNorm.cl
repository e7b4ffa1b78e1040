// Layer normalisation over the C channels of each row, as in llm.c.

#define LAYERNORM_EPSILON 1e-5f

// One work-group per row i: y[i,:] = (x[i,:] - mean_i) rstd_i w + b, with mean_i and
// rstd_i = 1/sqrt(var_i + 1e-5) saved. x and y are (N,C), w and b (C), mean and rstd (N).
__kernel void layernorm_forward(const int c, __global const float* x, const int xo, __global const float* w, const int wo,
                                __global const float* b, const int bo, __global float* y, const int yo,
                                __global float* mean, const int meano, __global float* rstd, const int rstdo,
                                __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    __global const float* xr = x + xo + row * c;
    __global float* yr = y + yo + row * c;

    float sum = 0.0f;
    for (int p = lid; p < c; p += size) sum += xr[p];
    const float m = group_sum(scratch, sum) / c;
    float squares = 0.0f;
    for (int p = lid; p < c; p += size)
    {
        const float d = xr[p] - m;
        squares += d * d;
    }
    const float variance = group_sum(scratch, squares) / c;
    const float s = 1.0f / sqrt(variance + LAYERNORM_EPSILON);
    for (int p = lid; p < c; p += size) yr[p] = (xr[p] - m) * s * w[wo + p] + b[bo + p];
    if (lid == 0)
    {
        mean[meano + row] = m;
        rstd[rstdo + row] = s;
    }
}

// One work-group per row i: with norm = (x - mean) rstd and dnorm = w dy,
// dx += rstd (dnorm - mean(dnorm) - norm mean(dnorm norm)). dy, x and dx are (N,C), w (C), mean and rstd (N).
__kernel void layernorm_backward_input(const int c, __global const float* dy, const int dyo, __global const float* x, const int xo,
                                       __global const float* w, const int wo, __global const float* mean, const int meano,
                                       __global const float* rstd, const int rstdo, __global float* dx, const int dxo,
                                       __local float* scratch)
{
    const int row = get_group_id(0);
    const int lid = get_local_id(0);
    const int size = get_local_size(0);
    __global const float* dyr = dy + dyo + row * c;
    __global const float* xr = x + xo + row * c;
    __global float* dxr = dx + dxo + row * c;
    const float m = mean[meano + row];
    const float s = rstd[rstdo + row];

    float dnormSum = 0.0f;
    float dnormNormSum = 0.0f;
    for (int p = lid; p < c; p += size)
    {
        const float norm = (xr[p] - m) * s;
        const float dnorm = w[wo + p] * dyr[p];
        dnormSum += dnorm;
        dnormNormSum += dnorm * norm;
    }
    const float dnormMean = group_sum(scratch, dnormSum) / c;
    const float dnormNormMean = group_sum(scratch, dnormNormSum) / c;
    for (int p = lid; p < c; p += size)
    {
        const float norm = (xr[p] - m) * s;
        const float dnorm = w[wo + p] * dyr[p];
        dxr[p] += s * (dnorm - dnormMean - norm * dnormNormMean);
    }
}

// One work-item per channel p, over every row: dw[p] += sum_i norm[i,p] dy[i,p]; db[p] += sum_i dy[i,p].
// flags bit 0: dw is present; bit 1: db is present. dy and x are (N,C), mean and rstd (N), dw and db (C).
__kernel void layernorm_backward_parameters(const int n, const int c, __global const float* dy, const int dyo,
                                            __global const float* x, const int xo, __global const float* mean, const int meano,
                                            __global const float* rstd, const int rstdo, __global float* dw, const int dwo,
                                            __global float* db, const int dbo, const int flags)
{
    const int p = get_global_id(0);
    if (p >= c) return;
    float dwSum = 0.0f;
    float dbSum = 0.0f;
    for (int i = 0; i < n; i++)
    {
        const float g = dy[dyo + i * c + p];
        dwSum += (x[xo + i * c + p] - mean[meano + i]) * rstd[rstdo + i] * g;
        dbSum += g;
    }
    if (flags & 1) dw[dwo + p] += dwSum;
    if (flags & 2) db[dbo + p] += dbSum;
}
