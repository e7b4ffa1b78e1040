using FedLora.Federation.Privacy;

namespace FedLora.Server.Tests;

/// <summary>The server under differential privacy: epsilon in its metrics, the adaptive clip kept across a restart, secret noise.</summary>
public sealed class PrivacyServerTests : IDisposable
{
    private readonly DirectoryInfo _folder = Directory.CreateTempSubdirectory("fedlora-dp-");

    public void Dispose() => _folder.Delete(recursive: true);

    private static readonly DpSettings Settings = new()
    {
        Clip = 0.05,
        NoiseMultiplier = 1,
        Delta = 1e-3,
        Adaptive = new AdaptiveClipping(TargetQuantile: 0.5, LearningRate: 0.5, CountNoise: 1),
    };

    private static void RunRound(RoundCoordinator coordinator, ServerOptions options)
    {
        var round = coordinator.State.Round;
        for (var id = 0; id < 3; id++) coordinator.Submit(id, round, ChaosKit.Train(coordinator, id, options));
    }

    [Fact]
    public void Rounds_WithDp_MetricsCarryEpsilonAndARestartResumesTheClipAndTheAccount()
    {
        using var harness = new NetworkHarness("zero-padding", [4, 2, 1], clientsPerRound: 3, rounds: 2);
        var options = harness.Options with { StateDirectory = _folder.FullName, Privacy = Settings };
        var mechanism = Settings.Resolve(3, 3, 2);
        var first = harness.Coordinator(options, new TestClock());
        ChaosKit.EnrollAll(first, [0, 1, 2]);
        RunRound(first, options);
        var after0 = first.MetricsHistory.Single();
        Assert.Equal(mechanism.EpsilonAfter(1), after0.Epsilon);
        Assert.NotNull(after0.DpClip);
        Assert.NotEqual(Settings.Clip, after0.DpClip);

        var second = harness.Coordinator(options, new TestClock());
        Assert.Equal(after0.DpClip, second.PrivacyClip);
        ChaosKit.EnrollAll(second, [0, 1, 2]);
        RunRound(second, options);

        Assert.Equal(mechanism.EpsilonAfter(2), second.MetricsHistory[^1].Epsilon);
        Assert.Equal(RoundPhase.Finished, second.Status().Phase);
    }

    [Fact]
    public void Noise_OnTheServer_IsNotTheSeeds()
    {
        // Clients know the job's seed: two servers of the same job and updates must not draw the same noise.
        using var harness = new NetworkHarness("fedit", [1, 1, 1], clientsPerRound: 3, rounds: 1);
        var options = harness.Options with { Privacy = Settings with { Adaptive = null } };
        float[][] Final()
        {
            var coordinator = harness.Coordinator(options, new TestClock());
            ChaosKit.EnrollAll(coordinator, [0, 1, 2]);
            RunRound(coordinator, options);
            return NetworkHarness.Flatten(coordinator.State);
        }

        Assert.NotEqual(Final(), Final());
    }

    [Fact]
    public void Setup_DpWithFloraOrARobustRule_IsRefused()
    {
        using var flora = new NetworkHarness("flora", [4, 2, 1]);
        Assert.Throws<NotSupportedException>(() => flora.Coordinator(flora.Options with { Privacy = Settings }, new TestClock()));

        using var fedit = new NetworkHarness("fedit", [1, 1, 1]);
        var error = Assert.Throws<ArgumentException>(() => (fedit.Options with { Privacy = Settings, Aggregation = AggregationRule.Median }).Validate(3));
        Assert.Contains("not a sum", error.Message, StringComparison.Ordinal);
    }
}
