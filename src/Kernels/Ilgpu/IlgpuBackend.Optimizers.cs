using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// Parameter updates, one thread per element; elements whose mask is 0 are left untouched.
public sealed partial class IlgpuBackend
{
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        float, float, float, float, float, float, float, int>? _adamW;
    private Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float, int>? _sgd;

    /// <summary>
    /// AdamW (decoupled weight decay), unless masked and mask[i] = 0: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p -= lr (m / c1 / (sqrt(v / c2) + eps) + wd p), with the bias corrections c1 = 1 - b1^t and c2 = 1 - b2^t
    /// computed on the host. g, mask, p, m and v are (L).
    /// </summary>
    private static void AdamWKernel(Index1D i, ArrayView<float> g, ArrayView<float> mask, ArrayView<float> p, ArrayView<float> m,
        ArrayView<float> v, float lr, float beta1, float beta2, float eps, float wd, float correction1, float correction2, int masked)
    {
        if (masked != 0 && mask[i] == 0f) return;
        var grad = g[i];
        var m1 = beta1 * m[i] + (1f - beta1) * grad;
        var m2 = beta2 * v[i] + (1f - beta2) * grad * grad;
        var param = p[i];
        m[i] = m1;
        v[i] = m2;
        p[i] = param - lr * (m1 / correction1 / (XMath.Sqrt(m2 / correction2) + eps) + wd * param);
    }

    /// <summary>SGD, unless masked and mask[i] = 0: p -= lr (g + wd p). g, mask and p are (L).</summary>
    private static void SgdKernel(Index1D i, ArrayView<float> g, ArrayView<float> mask, ArrayView<float> p, float learningRate,
        float weightDecay, int masked)
    {
        if (masked != 0 && mask[i] == 0f) return;
        var param = p[i];
        p[i] = param - learningRate * (g[i] + weightDecay * param);
    }

    /// <inheritdoc/>
    protected override void AdamWCore(in AdamWSettings settings, int timestep, BufferView grads, BufferView? mask,
        BufferView parameters, BufferView m, BufferView v)
    {
        if (grads.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _adamW, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, float, float, float, float, float, float, float, int>(
                AdamWKernel, group));
            var (lr, beta1, beta2, eps, wd) = (settings.LearningRate, settings.Beta1, settings.Beta2, settings.Epsilon, settings.WeightDecay);
            var correction1 = (float)(1 - Math.Pow(beta1, timestep));
            var correction2 = (float)(1 - Math.Pow(beta2, timestep));
            var masked = mask is null ? 0 : 1;
            Launch(nameof(AdamW), () => kernel(grads.Length, View(grads), ViewOrPlaceholder(mask), View(parameters), View(m), View(v),
                lr, beta1, beta2, eps, wd, correction1, correction2, masked));
        }
    }

    /// <inheritdoc/>
    protected override void SgdCore(float learningRate, float weightDecay, BufferView grads, BufferView? mask, BufferView parameters)
    {
        if (grads.Length == 0) return;
        lock (_gate)
        {
            var kernel = ElementKernel(ref _sgd, (a, group) => a.LoadImplicitlyGroupedStreamKernel<Index1D, ArrayView<float>,
                ArrayView<float>, ArrayView<float>, float, float, int>(SgdKernel, group));
            var masked = mask is null ? 0 : 1;
            Launch(nameof(Sgd), () => kernel(grads.Length, View(grads), ViewOrPlaceholder(mask), View(parameters), learningRate, weightDecay, masked));
        }
    }
}
