namespace FedLora.Model.Training;

/// <summary>Linear warmup to the peak rate, then cosine decay to <c>MinimumFraction</c> of it at the last step.</summary>
/// <param name="PeakRate">The rate reached at the end of warmup.</param>
/// <param name="WarmupSteps">Steps of linear warmup (0 for none).</param>
/// <param name="TotalSteps">Steps in the whole run.</param>
/// <param name="MinimumFraction">The final rate as a fraction of the peak.</param>
public sealed record LearningRateSchedule(float PeakRate, int WarmupSteps, int TotalSteps, float MinimumFraction = 0.1f)
{
    /// <summary>A constant rate.</summary>
    public static LearningRateSchedule Constant(float rate, int totalSteps) => new(rate, 0, totalSteps, 1f);

    /// <summary>The rate of step <paramref name="step"/>, counted from 0.</summary>
    public float At(int step)
    {
        if (step < WarmupSteps) return PeakRate * (step + 1) / WarmupSteps;
        var decaySteps = Math.Max(1, TotalSteps - WarmupSteps);
        var progress = Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0, 1);
        var cosine = 0.5 * (1 + Math.Cos(Math.PI * progress));
        return (float)(PeakRate * (MinimumFraction + (1 - MinimumFraction) * cosine));
    }
}
