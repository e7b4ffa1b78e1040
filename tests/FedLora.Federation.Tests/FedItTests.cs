using FedLora.Lora;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class FedItTests
{
    private static LoraSettings Rank2 { get; } = new(Rank: 2, Alpha: 2);

    private static (FedItStrategy Strategy, GlobalState State, RoundPlan Plan, ClientUpdate[] Updates) TwoClients()
    {
        var strategy = new FedItStrategy(One(Tiny), Rank2);
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 2), Client(1, 3, 2)], new Random(2));
        ClientUpdate[] updates =
        [
            Update(plan.Assignments[0], a: [1, 2, 3, 4], b: [1, 0, 0, 1]),
            Update(plan.Assignments[1], a: [0, 1, 1, 0], b: [2, 0, 0, 2]),
        ];
        return (strategy, state, plan, updates);
    }

    [Fact]
    public void ConfigureRound_Always_WarmStartsFromTheGlobalAdapter()
    {
        var (_, state, plan, _) = TwoClients();
        Assert.All(plan.Assignments, assignment =>
        {
            Assert.Equal(state.Adapters[0].A, assignment.Start[0].A);
            Assert.Equal(state.Adapters[0].B, assignment.Start[0].B);
            Assert.Equal(1f, assignment.Scale);
        });
    }

    [Fact]
    public void Aggregate_TwoClients_AveragesAAndBSeparatelyWithPk()
    {
        var (strategy, state, plan, updates) = TwoClients();
        var global = strategy.Aggregate(plan, state, updates).State.Adapters[0];

        // p = (1/4, 3/4): A = [1 2; 3 4]/4 + 3/4 [0 1; 1 0], B = I/4 + 3/4 * 2 I.
        Assert.Equal([0.25f, 1.25f, 1.5f, 1f], global.A);
        Assert.Equal([1.75f, 0f, 0f, 1.75f], global.B);
    }

    [Fact]
    public void Aggregate_SameInputsAsFLora_DiffersByExactlyTheCrossTerms()
    {
        var (strategy, state, plan, updates) = TwoClients();
        var fedIt = strategy.Aggregate(plan, state, updates).State.Adapters[0];
        var flora = new FLoraStrategy(One(Tiny), Rank2);
        var floraState = flora.Initialize(new Random(1));
        var floraPlan = flora.ConfigureRound(0, floraState, [Client(0, 1, 2), Client(1, 3, 2)], new Random(2));
        var floraUpdates = updates.Select((update, k) => Update(floraPlan.Assignments[k], update.Modules[0].A, update.Modules[0].B)).ToArray();
        var exact = Product(flora.Aggregate(floraPlan, floraState, floraUpdates).BaseUpdate![0]);

        // s B_bar A_bar - s sum_k p_k B_k A_k = s sum_{j != k} p_j p_k (B_j - B_k) A_k.
        var p = new[] { 0.25, 0.75 };
        var crossTerms = new double[4];
        for (var j = 0; j < 2; j++)
        {
            for (var k = 0; k < 2; k++)
            {
                if (j == k) continue;
                var bj = updates[j].Modules[0].B;
                var bk = updates[k].Modules[0].B;
                var difference = bj.Zip(bk, (x, y) => x - y).ToArray();
                crossTerms = Add(crossTerms, Product(difference, updates[k].Modules[0].A!, 2, 2, 2, p[j] * p[k]));
            }
        }
        var inexact = Product(fedIt, coefficient: 1);
        AssertClose(crossTerms, Subtract(inexact, exact), 1e-6, "FedIT - FLoRA");
        Assert.True(FrobeniusNorm(crossTerms) > 0.1, "the example must have cross terms to show");
    }

    [Fact]
    public void ConfigureRound_BudgetBelowGlobalRank_ThrowsAskingForTheSmallestBudget()
    {
        var strategy = new FedItStrategy(One(Tiny), Rank2);
        var error = Assert.Throws<ArgumentException>(() =>
            strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(0, 1, 2), Client(1, 1, 1)], new Random(2)));
        Assert.Contains("smallest budget", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ConfigureRound_BudgetAboveGlobalRank_TrainsTheGlobalRank()
    {
        var module = new LoraModuleSpec("m", 8, 8);
        var strategy = new FedItStrategy([module], new LoraSettings(Rank: 2, Alpha: 2));
        var plan = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(0, 1, 8)], new Random(2));
        Assert.Equal(2, plan.Assignments[0].Rank);
    }
}
