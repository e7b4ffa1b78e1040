// Parameter updates, one work-item per element; elements whose mask is 0 are left untouched.
// flags bit 0: a mask is present.

// AdamW (decoupled weight decay): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr (m / c1 / (sqrt(v / c2) + eps) + wd p), with the bias corrections c1 = 1-b1^t, c2 = 1-b2^t
// computed by the host. g, mask, p, m and v are (n). Each work-item updates 4 consecutive elements
// as float4 (the last work-item the remainder, one by one): explicit vectors, because PoCL did not
// vectorise the scalar body across work-items once it had both a division and a sqrt (4-11 ms over
// 786K floats instead of about 1 ms).
__kernel void adamw(const int n, const float lr, const float beta1, const float beta2, const float eps, const float wd,
                    const float correction1, const float correction2,
                    __global const float* g, const int go, __global const float* mask, const int masko, const int flags,
                    __global float* p, const int po, __global float* m, const int mo, __global float* v, const int vo)
{
    const int i = get_global_id(0) * 4;
    if (i >= n) return;
    if (i + 4 <= n)
    {
        const float4 grad = vload4(0, g + go + i);
        const float4 m0 = vload4(0, m + mo + i);
        const float4 v0 = vload4(0, v + vo + i);
        const float4 param = vload4(0, p + po + i);
        const float4 m1 = beta1 * m0 + (1.0f - beta1) * grad;
        const float4 m2 = beta2 * v0 + (1.0f - beta2) * grad * grad;
        const float4 updated = param - lr * (m1 / correction1 / (sqrt(m2 / correction2) + eps) + wd * param);
        // Masked elements keep their values (select takes its second operand where keep is set).
        const int4 keep = (flags & 1) ? vload4(0, mask + masko + i) != 0.0f : (int4)(-1);
        vstore4(select(m0, m1, keep), 0, m + mo + i);
        vstore4(select(v0, m2, keep), 0, v + vo + i);
        vstore4(select(param, updated, keep), 0, p + po + i);
        return;
    }
    for (int e = i; e < n; e++)
    {
        if ((flags & 1) && mask[masko + e] == 0.0f) continue;
        const float grad = g[go + e];
        const float m1 = beta1 * m[mo + e] + (1.0f - beta1) * grad;
        const float m2 = beta2 * v[vo + e] + (1.0f - beta2) * grad * grad;
        const float param = p[po + e];
        m[mo + e] = m1;
        v[vo + e] = m2;
        p[po + e] = param - lr * (m1 / correction1 / (sqrt(m2 / correction2) + eps) + wd * param);
    }
}

// SGD: p -= lr (g + wd p). g, mask and p are (n).
__kernel void sgd(const int n, const float lr, const float wd, __global const float* g, const int go,
                  __global const float* mask, const int masko, const int flags, __global float* p, const int po)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    if ((flags & 1) && mask[masko + i] == 0.0f) return;
    const float param = p[po + i];
    p[po + i] = param - lr * (g[go + i] + wd * param);
}
