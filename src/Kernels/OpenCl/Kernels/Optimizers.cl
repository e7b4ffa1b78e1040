// Parameter updates, one work-item per element; elements whose mask is 0 are left untouched.
// flags bit 0: a mask is present.

// AdamW (decoupled weight decay): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr (m / c1 / (sqrt(v / c2) + eps) + wd p), with the bias corrections c1 = 1-b1^t, c2 = 1-b2^t
// computed by the host. g, mask, p, m and v are (n).
__kernel void adamw(const int n, const float lr, const float beta1, const float beta2, const float eps, const float wd,
                    const float correction1, const float correction2,
                    __global const float* g, const int go, __global const float* mask, const int masko, const int flags,
                    __global float* p, const int po, __global float* m, const int mo, __global float* v, const int vo)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    if ((flags & 1) && mask[masko + i] == 0.0f) return;
    const float grad = g[go + i];
    const float m1 = beta1 * m[mo + i] + (1.0f - beta1) * grad;
    const float m2 = beta2 * v[vo + i] + (1.0f - beta2) * grad * grad;
    const float param = p[po + i];
    const float update = m1 / correction1 / (sqrt(m2 / correction2) + eps) + wd * param;
    m[mo + i] = m1;
    v[vo + i] = m2;
    p[po + i] = param - lr * update;
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
