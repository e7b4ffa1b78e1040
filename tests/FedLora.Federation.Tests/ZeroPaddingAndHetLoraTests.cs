using FedLora.Lora;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class ZeroPaddingAndHetLoraTests
{
    private static LoraModuleSpec Module { get; } = new("m", InFeatures: 3, OutFeatures: 4);

    public static TheoryData<string> PaddingMethods => ["zero-padding", "hetlora"];

    private static IFederatedStrategy Create(string method, LoraModuleSpec module, int rank) => method switch
    {
        "zero-padding" => new ZeroPaddingStrategy([module], new LoraSettings(rank, Alpha: 2 * rank)),
        _ => new HetLoraStrategy([module], new LoraSettings(rank, Alpha: 2 * rank)),
    };

    [Theory]
    [MemberData(nameof(PaddingMethods))]
    public void ConfigureRound_RankBudget_GivesTheFirstRanks(string method)
    {
        var strategy = Create(method, Module, 3);
        var state = strategy.Initialize(new Random(1));
        var start = strategy.ConfigureRound(0, state, [Client(0, 1, 2)], new Random(2)).Assignments[0].Start[0];

        var global = state.Adapters[0];
        Assert.Equal(global.A.AsSpan(0, 2 * 3).ToArray(), start.A);
        for (var o = 0; o < 4; o++) Assert.Equal(global.B.AsSpan(o * 3, 2).ToArray(), start.B.AsSpan(o * 2, 2).ToArray());
    }

    [Theory]
    [MemberData(nameof(PaddingMethods))]
    public void Aggregate_TruncateThenPad_RestoresTheKeptRanksAndZerosTheRest(string method)
    {
        var strategy = Create(method, Module, 3);
        var state = strategy.Initialize(new Random(1));
        var first = strategy.ConfigureRound(0, state, [Client(0, 1, 3)], new Random(2));
        state = strategy.Aggregate(first, state, [Fixtures.Random(first.Assignments[0], new Random(3))]).State;
        var plan = strategy.ConfigureRound(1, state, [Client(0, 1, 2)], new Random(4));

        var next = strategy.Aggregate(plan, state, [Shifted(plan.Assignments[0], 0)]).State.Adapters[0];

        var global = state.Adapters[0];
        Assert.Equal(global.A.AsSpan(0, 2 * 3).ToArray(), next.A.AsSpan(0, 2 * 3).ToArray());
        Assert.All(next.A.AsSpan(2 * 3).ToArray(), value => Assert.Equal(0f, value));
        for (var o = 0; o < 4; o++)
        {
            Assert.Equal(global.B.AsSpan(o * 3, 2).ToArray(), next.B.AsSpan(o * 3, 2).ToArray());
            Assert.Equal(0f, next.B[o * 3 + 2]);
        }
    }

    [Theory]
    [MemberData(nameof(PaddingMethods))]
    public void Aggregate_FullRankRoundTrip_ReturnsTheGlobalAdapter(string method)
    {
        var strategy = Create(method, Module, 3);
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 3)], new Random(2));
        var update = Fixtures.Random(plan.Assignments[0], new Random(3));

        var next = strategy.Aggregate(plan, state, [update]).State.Adapters[0];

        Assert.Equal(update.Modules[0].A, next.A);
        Assert.Equal(update.Modules[0].B, next.B);
    }

    [Fact]
    public void ZeroPadding_TwoRanks_WeightedSumOfPaddedSlices()
    {
        var strategy = new ZeroPaddingStrategy(One(Tiny), new LoraSettings(Rank: 2, Alpha: 4));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 1), Client(1, 1, 2)], new Random(2));

        var next = strategy.Aggregate(plan, state,
        [
            Update(plan.Assignments[0], a: [1, 1], b: [2, 2]),
            Update(plan.Assignments[1], a: [1, 2, 3, 4], b: [1, 0, 0, 1]),
        ]).State.Adapters[0];

        // p = (1/2, 1/2): A = ([1 1; 0 0] + [1 2; 3 4]) / 2, B = ([2 0; 2 0] + [1 0; 0 1]) / 2.
        Assert.Equal([1f, 1.5f, 1.5f, 2f], next.A);
        Assert.Equal([1.5f, 0f, 1f, 0.5f], next.B);
        Assert.Equal([2f, 2f], plan.Assignments.Select(assignment => assignment.Scale));
    }

    [Fact]
    public void HetLora_TwoClients_WeightsProportionalToNormOfBA()
    {
        var strategy = new HetLoraStrategy(One(Tiny), new LoraSettings(Rank: 2, Alpha: 4));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 1), Client(1, 9, 2)], new Random(2));

        var next = strategy.Aggregate(plan, state,
        [
            Update(plan.Assignments[0], a: [3, 4], b: [1, 0]),
            Update(plan.Assignments[1], a: [1, 0, 0, 0], b: [1, 0, 0, 1]),
        ]).State.Adapters[0];

        // ||B_1 A_1|| = ||[3 4; 0 0]|| = 5, ||B_2 A_2|| = ||[1 0; 0 0]|| = 1: w = (5/6, 1/6), whatever n_k.
        AssertClose([16 / 6.0, 20 / 6.0, 0, 0], next.A, 1e-7, "A");
        AssertClose([1, 0, 0, 1 / 6.0], next.B, 1e-7, "B");
    }

    [Fact]
    public void HetLora_PrunedUpload_IsRememberedForTheClient()
    {
        var module = new LoraModuleSpec("m", 8, 8);
        var strategy = new HetLoraStrategy([module], new LoraSettings(Rank: 8, Alpha: 16));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 8), Client(1, 1, 8)], new Random(2));
        var random = new Random(3);
        var pruned = Fixtures.Random(plan.Assignments[0], random);
        var kept = pruned.Modules[0];
        var truncated = new ClientUpdate(0, 0, 7, [new ModuleUpdate(module, kept.A!.AsSpan(0, 7 * 8).ToArray(),
            Enumerable.Range(0, 8 * 7).Select(i => kept.B[i / 7 * 8 + i % 7]).ToArray())]);

        var next = strategy.Aggregate(plan, state, [truncated, Fixtures.Random(plan.Assignments[1], random)]).State;

        Assert.Equal(7, next.ClientRanks[0]);
        Assert.Equal(8, next.ClientRanks[1]);
        var again = strategy.ConfigureRound(1, next, [Client(0, 1, 8), Client(1, 1, 8)], new Random(4));
        Assert.Equal([7, 8], again.Assignments.Select(assignment => assignment.Rank));
        Assert.Equal(strategy.Regularizer, again.Assignments[0].Regularizer);
    }

    [Fact]
    public void HetLora_UploadPrunedBelowOneStep_IsRejected()
    {
        var module = new LoraModuleSpec("m", 8, 8);
        var strategy = new HetLoraStrategy([module], new LoraSettings(Rank: 8, Alpha: 16));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 8)], new Random(2));
        var six = new ClientUpdate(0, 0, 6, [new ModuleUpdate(module, new float[6 * 8], new float[8 * 6])]);

        var error = Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [six]));
        Assert.Contains("8 or, pruned, 7", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0.99, 8, 7, 7)]
    [InlineData(0.99, 100, 99, 99)]
    [InlineData(0.99, 1, 0, 1)]
    [InlineData(0.5, 3, 1, 1)]
    [InlineData(1.0, 4, 4, 4)]
    public void Regularizer_TailStartAndPrunedRank_FloorGammaR(double gamma, int rank, int tailStart, int prunedRank)
    {
        var regularizer = new HetLoraRegularizer(Gamma: gamma);
        Assert.Equal(tailStart, regularizer.TailStart(rank));
        Assert.Equal(prunedRank, regularizer.PrunedRank(rank));
    }

    [Fact]
    public void Regularizer_Gradient_MatchesFiniteDifferences()
    {
        const int rank = 4, c = 3, o = 5;
        var regularizer = new HetLoraRegularizer(Lambda: 0.5, Gamma: 0.5);
        var random = new Random(9);
        var a = Values(random, rank * c);
        var b = Values(random, o * rank);
        var gradA = new float[a.Length];
        var gradB = new float[b.Length];
        var penalty = regularizer.AccumulateGradient(a, b, rank, c, o, gradA, gradB);
        Assert.Equal(regularizer.Penalty(a, b, rank, c, o), penalty, 12);

        const float step = 1e-2f;
        foreach (var (values, gradient, label) in new[] { (a, gradA, "A"), (b, gradB, "B") })
        {
            for (var i = 0; i < values.Length; i++)
            {
                var saved = values[i];
                values[i] = saved + step;
                var up = regularizer.Penalty(a, b, rank, c, o);
                values[i] = saved - step;
                var down = regularizer.Penalty(a, b, rank, c, o);
                values[i] = saved;
                var numeric = (up - down) / (2.0 * step);
                Assert.True(Math.Abs(numeric - gradient[i]) < 1e-4, $"d{label}[{i}]: numeric {numeric}, analytic {gradient[i]}");
            }
        }
        // Ranks before the tail (t = 2) carry no penalty gradient.
        Assert.All(gradA.AsSpan(0, 2 * c).ToArray(), value => Assert.Equal(0f, value));
    }

    [Fact]
    public void Regularizer_TailShrank_PrunesOneStep()
    {
        var regularizer = new HetLoraRegularizer();
        var random = new Random(5);
        var received = new HostAdapter(Module, 3, Values(random, 3 * 3), Values(random, 4 * 3));
        var shrunk = received.Clone();
        for (var col = 0; col < 3; col++) shrunk.A[2 * 3 + col] *= 0.5f;
        var grown = received.Clone();
        for (var col = 0; col < 3; col++) grown.A[2 * 3 + col] *= 2f;

        Assert.Equal(2, regularizer.RankAfterTraining(3, [received], [shrunk]));
        Assert.Equal(3, regularizer.RankAfterTraining(3, [received], [grown]));
    }
}
