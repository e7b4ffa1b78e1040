using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class FfaLoraTests
{
    [Fact]
    public void Aggregate_ManyRounds_ANeverChanges()
    {
        var strategy = new FfaLoraStrategy(AllStrategies.Modules, new LoraSettings(Rank: 3, Alpha: 6));
        var initial = strategy.Initialize(new Random(1));

        var final = AllStrategies.Run(strategy, rounds: 3, seed: 1);

        for (var m = 0; m < initial.Adapters.Count; m++)
        {
            Assert.Equal(initial.Adapters[m].A, final.Adapters[m].A);
            Assert.NotEqual(initial.Adapters[m].B, final.Adapters[m].B);
        }
    }

    [Fact]
    public void Aggregate_TwoClients_AveragesBWithPkAndIsExact()
    {
        var strategy = new FfaLoraStrategy(One(Tiny), new LoraSettings(Rank: 2, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 2), Client(1, 3, 2)], new Random(2));
        float[] b0 = [1, 0, 0, 1], b1 = [2, 2, 2, 2];

        var next = strategy.Aggregate(plan, state, [Update(plan.Assignments[0], null, b0), Update(plan.Assignments[1], null, b1)]).State.Adapters[0];

        Assert.Equal([1.75f, 1.5f, 1.5f, 1.75f], next.B);
        // s (sum p_k B_k) A = sum p_k s B_k A: no cross terms, since A is shared.
        var a = state.Adapters[0].A;
        var exact = Add(Product(b0, a, 2, 2, 2, 0.25), Product(b1, a, 2, 2, 2, 0.75));
        AssertClose(exact, Product(next), 1e-6, "B A");
    }

    [Fact]
    public void Assignment_BOnly_DownloadsAAndBUploadsB()
    {
        var strategy = new FfaLoraStrategy(One(Tiny), new LoraSettings(Rank: 2, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var assignment = strategy.ConfigureRound(0, state, [Client(0, 1, 2)], new Random(2)).Assignments[0];

        Assert.Equal(TrainableFactors.BOnly, assignment.Trainable);
        Assert.Equal(4L * (2 * 2 + 2 * 2), assignment.DownloadBytes);
        Assert.Equal(4L * 2 * 2, Shifted(assignment, 1).UploadBytes);
    }

    [Fact]
    public void Aggregate_UpdateCarryingA_IsRejected()
    {
        var strategy = new FfaLoraStrategy(One(Tiny), new LoraSettings(Rank: 2, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 2)], new Random(2));

        var error = Assert.Throws<ArgumentException>(() =>
            strategy.Aggregate(plan, state, [Update(plan.Assignments[0], a: [1, 2, 3, 4], b: [1, 0, 0, 1])]));
        Assert.Contains("only B is trainable", error.Message, StringComparison.Ordinal);
    }
}
