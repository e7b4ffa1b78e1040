namespace FedLora.Federation.Privacy;

/// <summary>
/// The resolved DP mechanism of one run (<see cref="DpSettings.Resolve"/>): N clients, M a round, the
/// noise multiplier z of a round and, under adaptive clipping, its split between the update sum and the
/// unclipped count; and the accountant: <see cref="EpsilonAfter"/> gives epsilon spent so far.
/// </summary>
/// <remarks>
/// <para>A round releases the sum of the reporting clients' contributions, each clipped to L2 norm S, plus
/// N(0, (z S)^2) on every coordinate. Adding or removing one client moves that sum by at most S, so under
/// Poisson sampling the round is the sampled Gaussian mechanism with multiplier z. FedLora's round loop
/// draws M of the N clients without replacement; neighbouring data sets then replace one client, which
/// moves the sum by up to 2S, so the accountant is given z / 2 (and a target epsilon asks for twice the
/// multiplier the accountant finds). Under adaptive clipping the round also releases the unclipped count
/// with noise sigma_b; both are one Gaussian mechanism of multiplier z when the update noise is
/// z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2 (Andrew et al., 2021, section 3).</para>
/// <para>The noise is drawn from <see cref="Random"/> in double precision: right for research and for
/// measuring the utility cost of privacy, not a hardened implementation (floating-point Gaussian
/// samplers leak through their low bits, Mironov 2012; the seeded generator is predictable).</para>
/// </remarks>
public sealed class DpMechanism
{
    private readonly double[] _roundRdp;

    internal DpMechanism(DpSettings settings, int clients, int clientsPerRound, int rounds, double noiseMultiplier, double countNoise, double delta)
    {
        Settings = settings;
        Clients = clients;
        ClientsPerRound = clientsPerRound;
        Rounds = rounds;
        NoiseMultiplier = noiseMultiplier;
        CountNoise = countNoise;
        Delta = delta;
        UpdateNoiseMultiplier = countNoise > 0 && noiseMultiplier > 0
            ? 1 / Math.Sqrt(1 / (noiseMultiplier * noiseMultiplier) - 1 / (4 * countNoise * countNoise))
            : noiseMultiplier;
        _roundRdp = RdpAccountant.Compute(settings.Sampling, SamplingRate, AccountedMultiplier(settings.Sampling, noiseMultiplier), RdpAccountant.DefaultOrders);
    }

    /// <summary>The settings as given.</summary>
    public DpSettings Settings { get; }

    /// <summary>N.</summary>
    public int Clients { get; }

    /// <summary>M: clients drawn a round, and the fixed denominator of the private average.</summary>
    public int ClientsPerRound { get; }

    /// <summary>The rounds the run was planned for (a target epsilon is met after this many).</summary>
    public int Rounds { get; }

    /// <summary>q = M / N.</summary>
    public double SamplingRate => (double)ClientsPerRound / Clients;

    /// <summary>z of a whole round (update sum and, under adaptive clipping, the count together): what the accountant composes.</summary>
    public double NoiseMultiplier { get; }

    /// <summary>z_delta: the multiplier of the noise on the update sum (z without adaptive clipping).</summary>
    public double UpdateNoiseMultiplier { get; }

    /// <summary>sigma_b, the noise on the unclipped count under adaptive clipping; 0 without it.</summary>
    public double CountNoise { get; }

    /// <summary>The delta epsilon is reported at.</summary>
    public double Delta { get; }

    /// <summary>The epsilon spent after <paramref name="rounds"/> rounds at <see cref="Delta"/> (infinite when z = 0).</summary>
    public double EpsilonAfter(int rounds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rounds);
        var rdp = Array.ConvertAll(_roundRdp, r => r * rounds);
        if (rounds == 0) Array.Clear(rdp);
        return RdpAccountant.Epsilon(RdpAccountant.DefaultOrders, rdp, Delta);
    }

    /// <summary>The private sum of a round at clip <paramref name="clip"/>: noise z_delta <paramref name="clip"/>, denominator M.</summary>
    public PrivateSum SumFor(double clip, Random random) => new(clip, UpdateNoiseMultiplier, ClientsPerRound, random);

    /// <summary>
    /// The standard deviation of the noise on each value of a round's released average at clip
    /// <paramref name="clip"/>: z_delta S / M (<see cref="SumFor"/>'s noise over its denominator).
    /// </summary>
    public double MeanNoiseStandardDeviation(double clip) => UpdateNoiseMultiplier * clip / ClientsPerRound;

    /// <summary>A fresh adaptive clip at the settings' initial clip; null without adaptive clipping.</summary>
    public AdaptiveClip? NewAdaptiveClip() =>
        Settings.Adaptive is { } adaptive ? new AdaptiveClip(adaptive, CountNoise, ClientsPerRound, Settings.Clip) : null;

    /// <summary>The smallest z for which <paramref name="rounds"/> rounds stay (epsilon, delta)-DP, in this class's units (sensitivity S).</summary>
    internal static double NoiseFor(double epsilon, double delta, ClientSampling sampling, double rate, int rounds)
    {
        var accounted = RdpAccountant.NoiseMultiplierFor(epsilon, delta, sampling, rate, rounds);
        return sampling == ClientSampling.WithoutReplacement ? 2 * accounted : accounted;
    }

    /// <summary>z over the sensitivity of the neighbouring relation the accountant assumes: S (Poisson) or 2S (replace one).</summary>
    internal static double AccountedMultiplier(ClientSampling sampling, double noiseMultiplier) =>
        sampling == ClientSampling.WithoutReplacement ? noiseMultiplier / 2 : noiseMultiplier;
}
