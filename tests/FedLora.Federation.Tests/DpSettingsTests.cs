using FedLora.Federation.Privacy;

namespace FedLora.Federation.Tests;

/// <summary>DP settings: what is refused, how z follows from a target, the accountant facade, adaptive clipping.</summary>
public sealed class DpSettingsTests
{
    public static TheoryData<DpSettings, string> BadSettings => new()
    {
        { new DpSettings { Clip = 0, NoiseMultiplier = 1 }, "clip norm S is 0" },
        { new DpSettings { Clip = -1, NoiseMultiplier = 1 }, "give a finite clip > 0" },
        { new DpSettings { Clip = double.NaN, NoiseMultiplier = 1 }, "give a finite clip > 0" },
        { new DpSettings { Clip = 1 }, "needs a noise multiplier z, or a target epsilon" },
        { new DpSettings { Clip = 1, NoiseMultiplier = -0.5 }, "give a finite z >= 0" },
        { new DpSettings { Clip = 1, NoiseMultiplier = 1, TargetEpsilon = 2, Delta = 1e-5 }, "give one of them" },
        { new DpSettings { Clip = 1, TargetEpsilon = 2 }, "needs a delta too" },
        { new DpSettings { Clip = 1, TargetEpsilon = 0, Delta = 1e-5 }, "give a finite epsilon > 0" },
        { new DpSettings { Clip = 1, TargetEpsilon = 2, Delta = 1 }, "give a delta in (0, 1)" },
        { new DpSettings { Clip = 1, NoiseMultiplier = 1, Delta = 0 }, "give a delta in (0, 1)" },
        { new DpSettings { Clip = 1, NoiseMultiplier = 1, Adaptive = new AdaptiveClipping(TargetQuantile: 1) }, "target quantile" },
        { new DpSettings { Clip = 1, NoiseMultiplier = 1, Adaptive = new AdaptiveClipping(LearningRate: 0) }, "learning rate" },
        { new DpSettings { Clip = 1, NoiseMultiplier = 1, Adaptive = new AdaptiveClipping(CountNoise: 0) }, "give a finite sigma_b > 0" },
        { new DpSettings { Clip = 1, NoiseMultiplier = 1, Adaptive = new AdaptiveClipping(CountNoise: 0.5) }, "must exceed z / 2" },
    };

    [Theory]
    [MemberData(nameof(BadSettings))]
    public void Validate_BadSettings_RefusedSayingWhatToChange(DpSettings settings, string message)
    {
        var error = Assert.Throws<ArgumentException>(settings.Validate);
        Assert.Contains(message, error.Message);
        Assert.Throws<ArgumentException>(() => settings.Resolve(100, 10, 5));
    }

    [Fact]
    public void Resolve_BadRun_Refused()
    {
        var settings = new DpSettings { Clip = 1, NoiseMultiplier = 1 };
        Assert.Contains("is not below 1 / 10 clients", Assert.Throws<ArgumentException>(() => (settings with { Delta = 0.1 }).Resolve(10, 5, 3)).Message);
        Assert.Contains("between 1 and 10", Assert.Throws<ArgumentException>(() => settings.Resolve(10, 11, 3)).Message);
        Assert.Contains("at least one round", Assert.Throws<ArgumentException>(() => settings.Resolve(10, 5, 0)).Message);
        // The shipped 10 clients at the default delta 1e-5 are fine.
        Assert.Equal(1, settings.Resolve(10, 5, 3).NoiseMultiplier);
    }

    [Theory]
    [InlineData(ClientSampling.WithoutReplacement, 1.0, 20, 100, 20)]
    [InlineData(ClientSampling.WithoutReplacement, 8.0, 20, 100, 20)]
    [InlineData(ClientSampling.Poisson, 1.0, 5, 10, 20)]
    public void Resolve_TargetEpsilon_SpendsItOverTheRun(ClientSampling sampling, double epsilon, int perRound, int clients, int rounds)
    {
        var mechanism = new DpSettings { Clip = 1, TargetEpsilon = epsilon, Delta = 1e-5, Sampling = sampling }.Resolve(clients, perRound, rounds);

        var spent = mechanism.EpsilonAfter(rounds);
        Assert.True(spent <= epsilon && spent >= 0.98 * epsilon, $"epsilon after {rounds} rounds is {spent}, target {epsilon}");
        Assert.True(mechanism.EpsilonAfter(rounds / 2) < spent);
        Assert.Equal(0, mechanism.EpsilonAfter(0));
    }

    [Fact]
    public void EpsilonAfter_WithoutReplacement_AccountsReplaceOneAsSensitivity2S()
    {
        // Replacing one of the M sampled clients moves the sum by up to 2S: the accountant composes z / 2.
        var mechanism = new DpSettings { Clip = 1, NoiseMultiplier = 3, Delta = 1e-6 }.Resolve(100, 20, 10);
        var reference = new RdpAccountant();
        reference.Compose(ClientSampling.WithoutReplacement, 0.2, 1.5, rounds: 7);
        Assert.Equal(reference.Epsilon(1e-6), mechanism.EpsilonAfter(7), 12);

        var poisson = new DpSettings { Clip = 1, NoiseMultiplier = 3, Delta = 1e-6, Sampling = ClientSampling.Poisson }.Resolve(100, 20, 10);
        var poissonReference = new RdpAccountant();
        poissonReference.Compose(ClientSampling.Poisson, 0.2, 3, rounds: 7);
        Assert.Equal(poissonReference.Epsilon(1e-6), poisson.EpsilonAfter(7), 12);
    }

    [Fact]
    public void EpsilonAfter_NoNoise_IsInfinite() =>
        Assert.Equal(double.PositiveInfinity, new DpSettings { Clip = 1, NoiseMultiplier = 0 }.Resolve(10, 5, 3).EpsilonAfter(1));

    [Fact]
    public void Resolve_Adaptive_SplitsTheNoiseAsAndrewEtAl()
    {
        // z = 1, sigma_b = M / 20 = 1 (M = 20): z_delta = (1 - 1/4)^-1/2 = 1.1547; the accountant still composes z.
        var mechanism = new DpSettings { Clip = 0.1, NoiseMultiplier = 1, Adaptive = new AdaptiveClipping() }.Resolve(100, 20, 10);
        Assert.Equal(1, mechanism.CountNoise, 12);
        Assert.Equal(2 / Math.Sqrt(3), mechanism.UpdateNoiseMultiplier, 12);
        Assert.Equal(1, mechanism.NoiseMultiplier);
        Assert.Equal(2 / Math.Sqrt(3) * 0.1, mechanism.SumFor(0.1, new Random(1)).NoiseStandardDeviation, 12);
        Assert.Equal(0.1, mechanism.NewAdaptiveClip()!.Clip);
        Assert.Null(new DpSettings { Clip = 0.1, NoiseMultiplier = 1 }.Resolve(100, 20, 10).NewAdaptiveClip());
    }

    [Theory]
    [InlineData(0.5, 0.01)]
    [InlineData(0.5, 100)]
    [InlineData(0.9, 1)]
    [InlineData(0.2, 1)]
    public void AdaptiveClip_SyntheticNorms_ConvergesToTheTargetQuantile(double quantile, double initialClip)
    {
        // Norms log-normal(0, 1): the gamma quantile is exp(Phi^-1(gamma)). 100 clients a round, sigma_b = 5.
        var options = new AdaptiveClipping(TargetQuantile: quantile, LearningRate: 0.2);
        var clip = new AdaptiveClip(options, countNoise: 5, expectedClients: 100, initialClip);
        var random = new Random(42);
        var target = Math.Exp(MathNet.Numerics.Distributions.Normal.InvCDF(0, 1, quantile));
        for (var round = 0; round < 300; round++)
        {
            var norms = Enumerable.Range(0, 100).Select(_ => Math.Exp(MathNet.Numerics.Distributions.Normal.Sample(random, 0, 1))).ToArray();
            clip.Step(norms, random);
        }
        Assert.InRange(clip.Clip, target / 1.3, target * 1.3);
    }

    [Fact]
    public void AdaptiveClip_Step_MovesTowardTheQuantileAndRestoresFromItsClip()
    {
        var options = new AdaptiveClipping(TargetQuantile: 0.5, LearningRate: 0.2, CountNoise: 1);
        var clip = new AdaptiveClip(options, countNoise: 0, expectedClients: 4, clip: 1);
        // All four norms under the clip: b = 1, C = exp(-0.2 x 0.5).
        Assert.Equal(1, clip.Step([0.1, 0.2, 0.3, 0.4], new Random(1)));
        Assert.Equal(Math.Exp(-0.1), clip.Clip, 12);
        // All above: b = 0, C grows by exp(0.1).
        Assert.Equal(0, clip.Step([5, 6, 7, 8], new Random(1)));
        Assert.Equal(1, clip.Clip, 12);
        // A missing client counts as neither (centred count): 2 under, 1 over, M = 4 gives b = 0.5 + 0.5/4.
        Assert.Equal(0.625, clip.Step([0.1, 0.2, 9], new Random(1)), 12);

        var saved = clip.Clip;
        var restored = new AdaptiveClip(options, 1, 4, saved);
        var original = new AdaptiveClip(options, 1, 4, saved);
        restored.Step([0.5, 3], new Random(8));
        original.Step([0.5, 3], new Random(8));
        Assert.Equal(original.Clip, restored.Clip);
    }
}
