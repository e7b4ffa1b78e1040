namespace FedLora.Federation.Privacy;

/// <summary>
/// The clip of adaptive clipping (Andrew et al., 2021), stepped once a round from the norms the round's
/// <see cref="PrivateSum"/> saw:
/// <code>
/// b = (sum_k (1[norm_k &lt;= C] - 1/2) + N(0, sigma_b^2)) / M + 1/2     the noised unclipped fraction
/// C &lt;- C exp(-eta (b - gamma))                                           geometric step toward quantile gamma
/// </code>
/// Centring the indicator at 1/2 gives the count sensitivity 1/2 under adding or removing a client, the
/// (2 sigma_b) of z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2. Its whole state is <see cref="Clip"/>: a server
/// persists that one number and restores it with the constructor.
/// </summary>
public sealed class AdaptiveClip
{
    /// <summary>A clip at <paramref name="clip"/>, following <paramref name="options"/>, count noise <paramref name="countNoise"/>
    /// (sigma_b) and denominator <paramref name="expectedClients"/> (M).</summary>
    /// <exception cref="ArgumentException">An option or number is out of range.</exception>
    public AdaptiveClip(AdaptiveClipping options, double countNoise, double expectedClients, double clip)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(null);
        if (!double.IsFinite(countNoise) || countNoise < 0) throw new ArgumentOutOfRangeException(nameof(countNoise), countNoise, "the noise on the unclipped count must be finite and >= 0");
        if (!double.IsFinite(expectedClients) || expectedClients <= 0) throw new ArgumentOutOfRangeException(nameof(expectedClients), expectedClients, "the denominator M must be finite and > 0");
        if (!double.IsFinite(clip) || clip <= 0) throw new ArgumentOutOfRangeException(nameof(clip), clip, "the clip must be finite and > 0");
        Options = options;
        CountNoise = countNoise;
        ExpectedClients = expectedClients;
        Clip = clip;
    }

    /// <summary>gamma and eta.</summary>
    public AdaptiveClipping Options { get; }

    /// <summary>sigma_b.</summary>
    public double CountNoise { get; }

    /// <summary>M.</summary>
    public double ExpectedClients { get; }

    /// <summary>C, the clip of the next round: the whole state to persist.</summary>
    public double Clip { get; private set; }

    /// <summary>
    /// One step from the norms (before clipping) of the round's contributions, all measured against the
    /// current <see cref="Clip"/>; returns the noised unclipped fraction b.
    /// </summary>
    public double Step(IReadOnlyList<double> norms, Random random)
    {
        ArgumentNullException.ThrowIfNull(norms);
        ArgumentNullException.ThrowIfNull(random);
        var centred = norms.Sum(norm => norm <= Clip ? 0.5 : -0.5);
        var fraction = (centred + CountNoise * Gaussian(random)) / ExpectedClients + 0.5;
        Clip *= Math.Exp(-Options.LearningRate * (fraction - Options.TargetQuantile));
        return fraction;
    }

    private static double Gaussian(Random random) =>
        Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
}
