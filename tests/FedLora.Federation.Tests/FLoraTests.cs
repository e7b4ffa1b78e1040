using FedLora.Kernels.Reference;
using FedLora.Lora;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class FLoraTests
{
    // Client 0: n = 1, rank 1, s = 2/1; client 1: n = 3, rank 2, s = 2/2. p = (1/4, 3/4).
    private static LoraSettings HeterogeneousScales { get; } = new(Rank: 2, Alpha: 2, ClientScale: ClientScaleRule.SameAlpha);

    private static (FLoraStrategy Strategy, GlobalState State, RoundPlan Plan) TwoClients()
    {
        var strategy = new FLoraStrategy(One(Tiny), HeterogeneousScales);
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 1), Client(1, 3, 2)], new Random(2));
        return (strategy, state, plan);
    }

    private static ClientUpdate[] HandUpdates(RoundPlan plan) =>
    [
        Update(plan.Assignments[0], a: [3, 4], b: [1, 2]),
        Update(plan.Assignments[1], a: [1, 2, 3, 4], b: [1, 0, 0, 1]),
    ];

    [Fact]
    public void Aggregate_HeterogeneousRanks_StacksBlocksWeightedByPkSk()
    {
        var (strategy, state, plan) = TwoClients();
        var merged = strategy.Aggregate(plan, state, HandUpdates(plan)).BaseUpdate![0];

        // B_stack = [B_1 B_2] (2,3), A_stack = [A_1; A_2] (3,2), w = (p_1 s_1, p_2 s_2, p_2 s_2) = (1/4*2, 3/4*1, 3/4*1).
        Assert.Equal(3, merged.Rank);
        Assert.Equal([1f, 1, 0, 2, 0, 1], merged.B);
        Assert.Equal([3f, 4, 1, 2, 3, 4], merged.A);
        Assert.Equal([0.5f, 0.75f, 0.75f], merged.RowWeights);
    }

    [Fact]
    public void Aggregate_HeterogeneousRanks_MergedUpdateIsSumOfPkSkBkAk()
    {
        var (strategy, state, plan) = TwoClients();
        var merged = strategy.Aggregate(plan, state, HandUpdates(plan)).BaseUpdate![0];

        // 1/4 * 2 * [1;2][3 4] + 3/4 * 1 * I [1 2; 3 4] = [1.5 2; 3 4] + [0.75 1.5; 2.25 3].
        using var backend = new ReferenceBackend();
        using var weight = backend.Allocate(4);
        using var b = backend.Allocate(merged.B.Length);
        using var a = backend.Allocate(merged.A.Length);
        backend.Upload(merged.B, b);
        backend.Upload(merged.A, a);
        backend.StackedAggregation(2, 2, merged.Rank, b, a, merged.RowWeights, weight);
        Assert.Equal([2.25f, 3.5f, 5.25f, 7f], backend.ToArray(weight));
    }

    [Fact]
    public void Aggregate_RandomHeterogeneousRanks_EqualsDenseSumOfPkSkBkAk()
    {
        var module = new LoraModuleSpec("m", InFeatures: 7, OutFeatures: 5);
        var strategy = new FLoraStrategy([module], new LoraSettings(Rank: 4, Alpha: 3, ClientScale: ClientScaleRule.SameAlpha));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 10, 1), Client(1, 20, 4), Client(2, 5, 3)], new Random(2));
        var random = new Random(3);
        var updates = plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray();

        var merged = strategy.Aggregate(plan, state, updates).BaseUpdate![0];

        var expected = new double[5 * 7];
        var p = new[] { 10 / 35.0, 20 / 35.0, 5 / 35.0 };
        for (var k = 0; k < 3; k++)
        {
            var s = 3.0 / plan.Assignments[k].Rank;
            var factors = updates[k].Modules[0];
            expected = Add(expected, Product(factors.B, factors.A!, updates[k].Rank, 7, 5, p[k] * s));
        }
        AssertClose(expected, Product(merged), 1e-6, "W update");
    }

    [Fact]
    public void Aggregate_Always_BroadcastsTheMergedUpdateToEveryClient()
    {
        var (strategy, state, plan) = TwoClients();
        var result = strategy.Aggregate(plan, state, HandUpdates(plan));

        // Per module: B_stack (2,3) + A_stack (3,2) + weights (3) = 15 floats.
        Assert.Equal(15 * 4, result.BroadcastBytes);
        Assert.Equal(0, result.State.Rank);
        Assert.Equal(1, result.State.Round);
    }

    [Fact]
    public void ConfigureRound_FreshAdapters_DrawnFromTheSeedThatTravels()
    {
        var (_, _, plan) = TwoClients();
        foreach (var assignment in plan.Assignments)
        {
            var fresh = HostAdapter.Fresh(assignment.Modules, assignment.Rank, new Random(assignment.FreshSeed!.Value));
            Assert.Equal(fresh[0].A, assignment.Start[0].A);
            Assert.All(assignment.Start[0].B, value => Assert.Equal(0f, value));
            Assert.Equal(4, assignment.DownloadBytes);
        }
    }

    [Fact]
    public void ConfigureRound_SameScaleWithAlphaTwiceRank_GivesAlphaTwiceClientRank()
    {
        var module = new LoraModuleSpec("m", 8, 8);
        var strategy = new FLoraStrategy([module], new LoraSettings(Rank: 8, Alpha: 16));
        var plan = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(0, 1, 2), Client(1, 1, 8)], new Random(2));

        Assert.Equal([4f, 16f], plan.Assignments.Select(assignment => assignment.Alpha));
        Assert.Equal([2f, 2f], plan.Assignments.Select(assignment => assignment.Scale));
    }
}
