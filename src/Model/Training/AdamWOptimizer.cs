using FedLora.Kernels;

namespace FedLora.Model.Training;

/// <summary>
/// AdamW over one contiguous trainable buffer and its gradient buffer, with optional clipping of
/// the gradient's global L2 norm and an optional mask (elements whose mask is 0 are frozen).
/// </summary>
public sealed class AdamWOptimizer : IDisposable
{
    private readonly Backend _backend;
    private readonly DeviceBuffer _m;
    private readonly DeviceBuffer _v;

    /// <summary>Creates zeroed moments for <paramref name="length"/> parameters.</summary>
    public AdamWOptimizer(Backend backend, int length, AdamWSettings settings, float maxGradientNorm = 0f)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (!(maxGradientNorm >= 0) || !float.IsFinite(maxGradientNorm))
        {
            throw new ArgumentOutOfRangeException(nameof(maxGradientNorm), maxGradientNorm, "the gradient-norm limit must be finite and >= 0 (0: no clipping)");
        }
        _backend = backend;
        _m = backend.Allocate(length);
        _v = backend.Allocate(length);
        Settings = settings;
        MaxGradientNorm = maxGradientNorm;
    }

    /// <summary>Hyper-parameters; the learning rate is overridden per step by <see cref="Step"/>.</summary>
    public AdamWSettings Settings { get; }

    /// <summary>The global gradient-norm limit; 0 disables clipping.</summary>
    public float MaxGradientNorm { get; }

    /// <summary>Steps taken so far.</summary>
    public int StepCount { get; private set; }

    /// <summary>Bytes held by the two moment buffers.</summary>
    public long AllocatedBytes => 8L * _m.Length;

    /// <summary>
    /// Clips (when enabled) and applies one AdamW step at <paramref name="learningRate"/>; returns the
    /// gradient's L2 norm before clipping.
    /// </summary>
    public float Step(BufferView parameters, BufferView gradients, float learningRate, BufferView? mask = null)
    {
        var norm = (float)Math.Sqrt(_backend.SumOfSquares(gradients));
        if (!float.IsFinite(norm))
        {
            throw new InvalidOperationException($"the gradient norm is {norm}: training diverged (lower the learning rate or enable clipping)");
        }
        if (MaxGradientNorm > 0 && norm > MaxGradientNorm) _backend.Scale(MaxGradientNorm / norm, gradients);
        StepCount++;
        _backend.AdamW(Settings with { LearningRate = learningRate }, StepCount, gradients, mask, parameters, _m, _v);
        return norm;
    }

    /// <summary>Zeroes the moments and the step count (a client's fresh optimizer each round).</summary>
    public void Reset()
    {
        _backend.Fill(_m, 0f);
        _backend.Fill(_v, 0f);
        StepCount = 0;
    }

    /// <summary>Releases the moment buffers.</summary>
    public void Dispose()
    {
        _m.Dispose();
        _v.Dispose();
    }
}
