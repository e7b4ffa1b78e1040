namespace FedLora.Federation.Privacy;

/// <summary>
/// Client-level differential privacy (DP-FedAvg, McMahan et al., 2018, "Learning Differentially Private
/// Recurrent Language Models"), as a user states it: the clip S of every client's contribution to the
/// round's sum, and either the noise multiplier z (the noise on the sum has standard deviation z S) or a
/// target (epsilon, delta) from which z is derived for the run. Off unless given; check with
/// <see cref="Validate"/>, turn into a round's numbers with <see cref="Resolve"/>.
/// </summary>
public sealed record DpSettings
{
    /// <summary>The delta epsilon is reported at when only a noise multiplier is given.</summary>
    public const double DefaultDelta = 1e-5;

    /// <summary>S: the L2 norm every client's contribution is clipped to (the initial clip under adaptive clipping).</summary>
    public double Clip { get; init; }

    /// <summary>z: the noise's standard deviation over S; null when <see cref="TargetEpsilon"/> is given instead.</summary>
    public double? NoiseMultiplier { get; init; }

    /// <summary>The epsilon the whole run may spend (with <see cref="Delta"/>); null when <see cref="NoiseMultiplier"/> is given.</summary>
    public double? TargetEpsilon { get; init; }

    /// <summary>delta of the guarantee; required with <see cref="TargetEpsilon"/>, else <see cref="DefaultDelta"/>.</summary>
    public double? Delta { get; init; }

    /// <summary>Adaptive clipping (Andrew et al., 2021); null for a fixed clip.</summary>
    public AdaptiveClipping? Adaptive { get; init; }

    /// <summary>How the round loop draws its clients, which the accountant must know (FedLora's loop draws without replacement).</summary>
    public ClientSampling Sampling { get; init; } = ClientSampling.WithoutReplacement;

    /// <summary>Refuses settings that cannot give a guarantee, with a message that says what to change.</summary>
    /// <exception cref="ArgumentException">S is not finite and > 0; neither or both of z and the target epsilon;
    /// z negative or not finite; epsilon not finite and > 0, or without delta; delta outside (0, 1); bad adaptive options.</exception>
    public void Validate()
    {
        if (!double.IsFinite(Clip) || Clip <= 0) throw new ArgumentException($"the DP clip norm S is {Clip}: give a finite clip > 0");
        if (NoiseMultiplier is null && TargetEpsilon is null) throw new ArgumentException("DP needs a noise multiplier z, or a target epsilon with a delta to derive it from: give one");
        if (NoiseMultiplier is not null && TargetEpsilon is not null) throw new ArgumentException($"DP got both a noise multiplier ({NoiseMultiplier}) and a target epsilon ({TargetEpsilon}): give one of them, the other follows");
        if (NoiseMultiplier is { } z && (!double.IsFinite(z) || z < 0)) throw new ArgumentException($"the DP noise multiplier z is {z}: give a finite z >= 0 (0 clips without noise and gives no privacy)");
        if (TargetEpsilon is { } epsilon)
        {
            if (!double.IsFinite(epsilon) || epsilon <= 0) throw new ArgumentException($"the target epsilon is {epsilon}: give a finite epsilon > 0");
            if (Delta is null) throw new ArgumentException($"a target epsilon ({epsilon}) needs a delta too: give delta, e.g. 1e-5 (below 1 / the number of clients)");
        }
        if (Delta is { } delta && !(delta > 0 && delta < 1)) throw new ArgumentException($"the DP delta is {delta}: give a delta in (0, 1), below 1 / the number of clients");
        if (!Enum.IsDefined(Sampling)) throw new ArgumentException($"unknown client sampling {Sampling}");
        Adaptive?.Validate(NoiseMultiplier);
    }

    /// <summary>
    /// The numbers of a run of <paramref name="rounds"/> rounds drawing <paramref name="clientsPerRound"/>
    /// (M) of <paramref name="clients"/> (N) clients a round: the noise multiplier (derived from the target
    /// when one is given), the noise split under adaptive clipping, and the accountant.
    /// </summary>
    /// <exception cref="ArgumentException">The settings are invalid (<see cref="Validate"/>), M is not in [1, N],
    /// delta is not below 1/N, or no noise reaches the target.</exception>
    public DpMechanism Resolve(int clients, int clientsPerRound, int rounds)
    {
        Validate();
        if (clients < 1) throw new ArgumentException($"DP needs at least one client, got {clients}");
        if (clientsPerRound < 1 || clientsPerRound > clients) throw new ArgumentException($"{clientsPerRound} clients a round of {clients}: give between 1 and {clients}");
        if (rounds < 1) throw new ArgumentException($"a DP run needs at least one round, got {rounds}");
        var delta = Delta ?? DefaultDelta;
        if (delta >= 1.0 / clients) throw new ArgumentException($"delta {delta} is not below 1 / {clients} clients: a guarantee that weak allows releasing a whole client's data; lower delta");
        var rate = (double)clientsPerRound / clients;
        var z = NoiseMultiplier ?? DpMechanism.NoiseFor(TargetEpsilon!.Value, delta, Sampling, rate, rounds);
        var countNoise = Adaptive is null ? 0 : Adaptive.CountNoise ?? clientsPerRound / 20.0;
        if (Adaptive is not null) AdaptiveClipping.CheckSplit(z, countNoise);
        return new DpMechanism(this, clients, clientsPerRound, rounds, z, countNoise, delta);
    }
}

/// <summary>
/// Adaptive clipping (Andrew et al., 2021, "Differentially Private Learning with Adaptive Clipping"): the
/// clip follows a target quantile of the clients' update norms, C &lt;- C exp(-eta (b - gamma)), b the
/// noised fraction of updates whose norm was at most C.
/// </summary>
/// <param name="TargetQuantile">gamma in (0, 1): the fraction of updates that should go unclipped (the paper's 0.5).</param>
/// <param name="LearningRate">eta > 0 of the geometric update (the paper's 0.2).</param>
/// <param name="CountNoise">sigma_b, the standard deviation of the noise on the count of unclipped updates;
/// null for the paper's M / 20 (M the clients a round).</param>
public sealed record AdaptiveClipping(double TargetQuantile = 0.5, double LearningRate = 0.2, double? CountNoise = null)
{
    internal void Validate(double? noiseMultiplier)
    {
        if (!(TargetQuantile > 0 && TargetQuantile < 1)) throw new ArgumentException($"the adaptive clip's target quantile is {TargetQuantile}: give a quantile in (0, 1), e.g. 0.5");
        if (!double.IsFinite(LearningRate) || LearningRate <= 0) throw new ArgumentException($"the adaptive clip's learning rate is {LearningRate}: give a finite rate > 0, e.g. 0.2");
        if (CountNoise is { } sigma && (!double.IsFinite(sigma) || sigma <= 0)) throw new ArgumentException($"the noise on the unclipped count is {sigma}: give a finite sigma_b > 0 (the count is released too)");
        if (CountNoise is { } countNoise && noiseMultiplier is { } z) CheckSplit(z, countNoise);
    }

    /// <summary>z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2 exists only when 2 sigma_b > z.</summary>
    internal static void CheckSplit(double z, double countNoise)
    {
        if (z > 0 && !(2 * countNoise > z))
        {
            throw new ArgumentException($"adaptive clipping spends part of the noise multiplier z = {z:G4} on the unclipped count; its noise sigma_b = {countNoise:G4} must exceed z / 2 = {z / 2:G4}: raise sigma_b or lower z (a larger epsilon)");
        }
    }
}
