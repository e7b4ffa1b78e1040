using FedLora.Federation.Privacy;
using FedLora.Lora;
using MathNet.Numerics.Distributions;

namespace FedLora.Federation.Tests;

/// <summary>
/// Private aggregation of every method that aggregates by a sum: the clip bounds each client's effect on
/// the released sum, the noise has the right spread, the denominator is fixed, z = 0 gives back the
/// ordinary aggregate, FLoRA is refused.
/// </summary>
public sealed class PrivateAggregationTests
{
    public static TheoryData<string> SumMethods => ["fslora", "fedit", "zero-padding", "hetlora", "flexlora", "ffa-lora"];

    /// <summary>Four clients with equal n_k: one rank for FedIT and FFA-LoRA, heterogeneous ranks otherwise (sum >= 4 = min(O, C), so FlexLoRA keeps full rank).</summary>
    private static SampledClient[] EqualClients(IFederatedStrategy strategy)
    {
        var r = strategy.Settings.Rank;
        int[] ranks = strategy is FedItStrategy or FfaLoraStrategy ? [r, r, r, r] : [1, r, 2, 1];
        return ranks.Select((rank, id) => Fixtures.Client(id, 5, Math.Min(rank, r))).ToArray();
    }

    /// <summary>Two ordinary rounds, so that round 2 starts from a trained state (FlexLoRA: truncations of Delta W, not fresh adapters).</summary>
    private static (GlobalState State, RoundPlan Plan, ClientUpdate[] Updates) ThirdRound(IFederatedStrategy strategy, int seed, float spread = 1)
    {
        var random = new Random(seed);
        var state = strategy.Initialize(random);
        for (var round = 0; ; round++)
        {
            var plan = strategy.ConfigureRound(round, state, EqualClients(strategy), random);
            var updates = plan.Assignments.Select(assignment => Perturbed(assignment, random, spread)).ToArray();
            if (round == 2) return (state, plan, updates);
            state = strategy.Aggregate(plan, state, updates).State;
        }
    }

    /// <summary>The start plus uniform noise of half-width <paramref name="spread"/> on every trained value (HetLoRA: at a random allowed rank).</summary>
    private static ClientUpdate Perturbed(ClientAssignment assignment, Random random, float spread)
    {
        var rank = assignment.Regularizer is { } regularizer && random.Next(2) == 0 ? regularizer.PrunedRank(assignment.Rank) : assignment.Rank;
        var modules = assignment.Start.Select((start, m) =>
        {
            var truncated = rank == assignment.Rank ? start : LowRank.Truncate(start, rank);
            float[]? a = assignment.Trainable == TrainableFactors.BOnly ? null : truncated.A.Select(x => x + spread * (float)(random.NextDouble() * 2 - 1)).ToArray();
            var b = truncated.B.Select(x => x + spread * (float)(random.NextDouble() * 2 - 1)).ToArray();
            return new ModuleUpdate(start.Module, a, b, assignment.RankIndices?[m]);
        }).ToArray();
        return new ClientUpdate(assignment.ClientId, assignment.Round, rank, modules);
    }

    /// <summary>What a client moves: the state's factors (A and B of every module), or for FlexLoRA the dense s B A of every module.</summary>
    private static double[] Observable(IFederatedStrategy strategy, GlobalState state) =>
        strategy is FlexLoraStrategy
            ? state.Adapters.SelectMany(adapter => Fixtures.Product(adapter, state.Scale)).ToArray()
            : state.Adapters.SelectMany(adapter => adapter.A.Concat(adapter.B).Select(x => (double)x)).ToArray();

    private static AggregationResult Private(IFederatedStrategy strategy, RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates,
        double clip, double noise = 0, int seed = 0) =>
        PrivateAggregation.Aggregate(strategy, plan, state, updates, new PrivateSum(clip, noise, plan.Assignments.Count, new Random(seed)));

    [Theory]
    [MemberData(nameof(SumMethods))]
    public void AggregatePrivately_NoNoiseNoClipEveryoneReports_EqualsOrdinaryAggregate(string method)
    {
        var strategy = AllStrategies.Create(method);
        var (state, plan, updates) = ThirdRound(strategy, seed: 7);

        var expected = strategy is HetLoraStrategy
            // HetLoRA's norm weights are replaced by 1/M under DP: its private aggregate is zero-padding's average.
            ? new ZeroPaddingStrategy(strategy.Modules, strategy.Settings).Aggregate(plan, state, updates)
            : strategy.Aggregate(plan, state, updates);
        var actual = Private(strategy, plan, state, updates, clip: 1e9);

        Fixtures.AssertClose(Observable(strategy, expected.State), Observable(strategy, actual.State), 1e-5, method);
        Assert.Equal(expected.State.Rank, actual.State.Rank);
        Assert.Equal(expected.State.Scale, actual.State.Scale);
    }

    [Fact]
    public void HetLora_OneClient_PrivateEqualsOrdinary()
    {
        // With one client the norm weight is 1 = 1/M, so HetLoRA's own aggregate is the reference, pruning included.
        var strategy = new HetLoraStrategy(AllStrategies.Modules, new LoraSettings(3, 6));
        var random = new Random(3);
        var state = strategy.Initialize(random);
        var plan = strategy.ConfigureRound(0, state, [Fixtures.Client(0, 5, 3)], random);
        var pruned = new ClientUpdate(0, 0, 2, plan.Assignments[0].Start.Select(start =>
            new ModuleUpdate(start.Module, Fixtures.Values(random, 2 * start.Module.InFeatures), Fixtures.Values(random, start.Module.OutFeatures * 2))).ToArray());

        var expected = strategy.Aggregate(plan, state, [pruned]);
        var actual = Private(strategy, plan, state, [pruned], clip: 1e9);

        Fixtures.AssertClose(Observable(strategy, expected.State), Observable(strategy, actual.State), 1e-6, "hetlora");
        Assert.Equal(2, actual.State.ClientRanks[0]);
    }

    [Fact]
    public void ClipAndNoise_PropertyOverMethodsRanksAndUpdates_OneClientMovesTheReleaseByAtMostSOverM()
    {
        // Removing one client from a round (it becomes a sampled client that did not report) moves what the
        // round releases by its clipped contribution over M: at most S/M, and exactly S/M when it was clipped.
        // z = 0 so that the difference is visible; the noise does not depend on the updates.
        var random = new Random(2024);
        string[] methods = ["fslora", "fedit", "zero-padding", "hetlora", "flexlora", "ffa-lora"];
        for (var trial = 0; trial < 120; trial++)
        {
            var method = methods[trial % methods.Length];
            var strategy = AllStrategies.Create(method, rank: random.Next(1, 5));
            var (state, plan, updates) = ThirdRound(strategy, seed: random.Next(), spread: (float)Math.Pow(10, random.NextDouble() * 3 - 2));
            var clip = Math.Pow(10, random.NextDouble() * 2.5 - 1.5);
            var removed = random.Next(updates.Length);
            var m = plan.Assignments.Count;

            var with = Observable(strategy, Private(strategy, plan, state, updates, clip).State);
            var sum = new PrivateSum(clip, 0, m, new Random(0));
            var without = Observable(strategy, PrivateAggregation.Aggregate(strategy, plan, state, updates.Where((_, k) => k != removed).ToArray(), sum).State);

            var moved = Fixtures.FrobeniusNorm(Fixtures.Subtract(with, without));
            var bound = clip / m;
            // The states are rounded to float: allow that rounding, relative to the state's size.
            var rounding = 1e-6 * Fixtures.FrobeniusNorm(with);
            var label = $"trial {trial}: {method} rank {strategy.Settings.Rank}, S {clip:G3}, client {removed} of {m}";
            Assert.True(moved <= bound * (1 + 1e-4) + rounding, $"{label} moved the release by {moved:G6} > S/M = {bound:G6}");
            var norm = ContributionNorm(strategy, plan, state, updates[removed]);
            if (norm > clip) Assert.True(moved >= bound * (1 - 1e-4) - rounding, $"{label}: a clipped client moved it by {moved:G6} < S/M = {bound:G6}");
            else Assert.True(Math.Abs(moved - norm / m) <= 1e-4 * bound + rounding, $"{label}: an unclipped client of norm {norm:G6} moved it by {moved:G6}");
        }
    }

    /// <summary>A client's contribution norm, as the private sum saw it (a one-client sum with a huge clip records it).</summary>
    private static double ContributionNorm(IFederatedStrategy strategy, RoundPlan plan, GlobalState state, ClientUpdate update)
    {
        var sum = new PrivateSum(1e12, 0, plan.Assignments.Count, new Random(0));
        PrivateAggregation.Aggregate(strategy, plan, state, [update], sum);
        return sum.Norms.Single();
    }

    [Theory]
    [MemberData(nameof(SumMethods))]
    public void ContributionNorm_FactorMethods_IsUpdateGuardsChangeNorm(string method)
    {
        // Every method but FlexLoRA clips exactly the change UpdateGuard measures (HetLoRA: when it did not prune).
        var strategy = AllStrategies.Create(method);
        if (strategy is FlexLoraStrategy) return;
        var (state, plan, updates) = ThirdRound(strategy, seed: 11);
        foreach (var (assignment, update) in plan.Assignments.Zip(updates))
        {
            if (update.Rank != assignment.Rank) continue;
            Assert.Equal(UpdateGuard.ChangeNorm(assignment, update), ContributionNorm(strategy, plan, state, update), 9);
        }
    }

    [Fact]
    public void FixedDenominator_ClientMissing_DividesByTheSampledCount()
    {
        // Three sampled, two report a change of +0.25 on every value: DP-FedAvg adds 2 x 0.25 / 3 (the missing
        // client counts as no change), where the ordinary average over reporters adds 0.25.
        var strategy = new FedItStrategy(Fixtures.One(Fixtures.Tiny), new LoraSettings(Rank: 2, Alpha: 4));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Fixtures.Client(0, 1, 2), Fixtures.Client(1, 100, 2), Fixtures.Client(2, 1, 2)], new Random(2));
        ClientUpdate[] reported = [Fixtures.Shifted(plan.Assignments[0], 0.25f), Fixtures.Shifted(plan.Assignments[1], 0.25f)];

        var next = Private(strategy, plan, state, reported, clip: 1e9).State.Adapters[0];

        var global = state.Adapters[0];
        Fixtures.AssertClose(global.A.Select(x => x + 0.5 / 3).ToArray(), next.A, 1e-6, "A");
        Fixtures.AssertClose(global.B.Select(x => x + 0.5 / 3).ToArray(), next.B, 1e-6, "B");
    }

    [Fact]
    public void FixedDenominator_DataSizes_DoNotWeight()
    {
        // n_k = 1 and 1000 reporting +1 and -1: equal weights 1/M cancel; p_k = n_k / sum n would not.
        var strategy = new FedItStrategy(Fixtures.One(Fixtures.Tiny), new LoraSettings(Rank: 2, Alpha: 4));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Fixtures.Client(0, 1, 2), Fixtures.Client(1, 1000, 2)], new Random(2));

        var next = Private(strategy, plan, state, [Fixtures.Shifted(plan.Assignments[0], 1), Fixtures.Shifted(plan.Assignments[1], -1)], clip: 1e9).State.Adapters[0];

        Fixtures.AssertClose(state.Adapters[0].A.Select(x => (double)x).ToArray(), next.A, 1e-6, "A");
        Fixtures.AssertClose(state.Adapters[0].B.Select(x => (double)x).ToArray(), next.B, 1e-6, "B");
    }

    [Theory]
    [InlineData("fedit")]
    [InlineData("flexlora")]
    [InlineData("fslora")]
    public void Noise_ZeroChanges_HasStandardDeviationZSOverM(string method)
    {
        // Every client sends back its start, so the release is the noise alone: next - global per coordinate is
        // N(0, (z S / M)^2). Its sum of squares over n coordinates, divided by that variance, is chi-square with n
        // degrees of freedom; the test fails outside the central 1 - 1e-6 of that law (false-failure rate 1e-6;
        // with n = 896 to 3072 coordinates a spread off by more than about 12% fails). The mean is checked too.
        // Six clients of rank 8 make FlexLoRA's truncation K = 48 = min(O, C), so its state is the whole release.
        var modules = new LoraModuleSpec[] { new("big", InFeatures: 48, OutFeatures: 64) };
        var settings = new LoraSettings(8, 16);
        IFederatedStrategy strategy = method switch
        {
            "fedit" => new FedItStrategy(modules, settings),
            "flexlora" => new FlexLoraStrategy(modules, settings),
            _ => new FsLoraStrategy(modules, settings),
        };
        var random = new Random(5);
        var state = strategy.Initialize(random);
        var plan = strategy.ConfigureRound(0, state, Enumerable.Range(0, 6).Select(id => Fixtures.Client(id, 5, 8)).ToArray(), random);
        var updates = plan.Assignments.Select(assignment => Fixtures.Shifted(assignment, 0)).ToArray();
        var (clip, z, m) = (0.7, 1.3, plan.Assignments.Count);

        var next = PrivateAggregation.Aggregate(strategy, plan, state, updates, new PrivateSum(clip, z, m, new Random(99))).State;

        var noise = Fixtures.Subtract(Observable(strategy, next), Observable(strategy, state));
        AssertGaussian(noise, z * clip / m);
    }

    [Fact]
    public void Noise_FfaLora_OnBOnlyAndAStaysExact()
    {
        // Nobody changes A, so A carries no noise: it must stay the frozen init bit for bit, while B moves.
        var strategy = new FfaLoraStrategy([new LoraModuleSpec("big", InFeatures: 48, OutFeatures: 64)], new LoraSettings(8, 16));
        var random = new Random(5);
        var state = strategy.Initialize(random);
        var plan = strategy.ConfigureRound(0, state, Enumerable.Range(0, 3).Select(id => Fixtures.Client(id, 5, 8)).ToArray(), random);

        var next = Private(strategy, plan, state, plan.Assignments.Select(assignment => Fixtures.Shifted(assignment, 0)).ToArray(), clip: 0.7, noise: 1.3).State;

        Assert.Equal(state.Adapters[0].A, next.Adapters[0].A);
        AssertGaussian(Fixtures.Subtract([.. next.Adapters[0].B.Select(x => (double)x)], [.. state.Adapters[0].B.Select(x => (double)x)]), 1.3 * 0.7 / 3);
    }

    [Fact]
    public void Noise_PrivateSumRelease_HasStandardDeviationZS()
    {
        var sum = new PrivateSum(2.5, 0.8, 1, new Random(17));
        double[][] parts = [new double[40_000], new double[60_001]];
        sum.Release(parts);
        AssertGaussian([.. parts[0], .. parts[1]], 0.8 * 2.5);
    }

    [Fact]
    public void Noise_MechanismsMeanNoise_IsWhatItsSumReleases()
    {
        // The spread a run prints (DpMechanism.MeanNoiseStandardDeviation) against the spread of what the
        // mechanism's own sum releases: adaptive clipping's z_delta, over the fixed denominator M = 20.
        var mechanism = new DpSettings { Clip = 0.3, NoiseMultiplier = 1, Adaptive = new AdaptiveClipping() }.Resolve(100, 20, 10);
        double[][] parts = [new double[50_000]];
        mechanism.SumFor(0.3, new Random(23)).Release(parts);
        AssertGaussian(parts[0], mechanism.MeanNoiseStandardDeviation(0.3));
    }

    /// <summary>
    /// Fails with probability 2e-6 when <paramref name="values"/> are i.i.d. N(0, sd^2): sum x^2 / sd^2 outside
    /// the central 1 - 1e-6 of chi-square(n), or the mean outside +-4.892 sd / sqrt(n) (two-sided 1e-6).
    /// </summary>
    private static void AssertGaussian(double[] values, double sd)
    {
        var n = values.Length;
        var statistic = values.Sum(x => x * x) / (sd * sd);
        var (low, high) = (ChiSquared.InvCDF(n, 5e-7), ChiSquared.InvCDF(n, 1 - 5e-7));
        Assert.True(statistic >= low && statistic <= high,
            $"sum of squares / sd^2 = {statistic:F1} outside [{low:F1}, {high:F1}] for {n} values: measured sd {Math.Sqrt(statistic / n) * sd:G5}, expected {sd:G5}");
        var mean = values.Average();
        Assert.True(Math.Abs(mean) <= 4.892 * sd / Math.Sqrt(n), $"mean {mean:G4} is not 0 (sd {sd:G4}, n {n})");
    }

    [Fact]
    public void Flora_UnderDp_IsRefusedWithTheReason()
    {
        var strategy = AllStrategies.Create("flora");
        var error = Assert.Throws<NotSupportedException>(() => PrivateAggregation.RequireSupport(strategy));
        Assert.Contains("FLoRA", error.Message);
        Assert.Contains("never forms a sum", error.Message);
        Assert.Contains("without", error.Message);
    }

    [Theory]
    [MemberData(nameof(SumMethods))]
    public void RequireSupport_SumMethods_Accepted(string method)
    {
        var strategy = AllStrategies.Create(method);
        Assert.Same(strategy, PrivateAggregation.RequireSupport(strategy));
    }

    [Fact]
    public void PrivateSum_Misuse_IsRefused()
    {
        var sum = new PrivateSum(1, 1, 2, new Random(1));
        double[][] total = [new double[3]];
        sum.ClipAndAdd([new double[] { 3, 4, 0 }], total);
        Fixtures.AssertClose([0.6, 0.8, 0], total[0], 1e-15, "clipped to S = 1");
        Assert.Equal(5, sum.Norms[0]);
        Assert.Throws<ArgumentException>(() => sum.ClipAndAdd([new double[2]], total));
        Assert.Throws<ArgumentException>(() => sum.ClipAndAdd([new[] { double.NaN, 0, 0 }], total));
        sum.Release(total);
        Assert.Throws<InvalidOperationException>(() => sum.Release(total));
        Assert.Throws<InvalidOperationException>(() => sum.ClipAndAdd([new double[3]], total));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivateSum(0, 1, 1, new Random(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivateSum(1, -1, 1, new Random(1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrivateSum(1, 1, 0, new Random(1)));
    }
}
