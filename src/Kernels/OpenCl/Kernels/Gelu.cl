// GELU, tanh approximation: y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

#define GELU_SCALE 0.7978845608028654f

// y = gelu(x). x and y are (n).
__kernel void gelu_forward(const int n, __global const float* x, const int xo, __global float* y, const int yo)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float v = x[xo + i];
    y[yo + i] = 0.5f * v * (1.0f + tanh(GELU_SCALE * (v + 0.044715f * v * v * v)));
}

// dx += gelu'(x) dy. x, dy and dx are (n).
__kernel void gelu_backward(const int n, __global const float* x, const int xo, __global const float* dy, const int dyo,
                            __global float* dx, const int dxo)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float v = x[xo + i];
    const float t = tanh(GELU_SCALE * (v + 0.044715f * v * v * v));
    const float sech2 = 1.0f - t * t;
    const float derivative = 0.5f * (1.0f + t) + 0.5f * v * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * v * v);
    dx[dxo + i] += derivative * dy[dyo + i];
}
