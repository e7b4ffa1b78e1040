using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class ValidationTests
{
    private static FedItStrategy FedIt() => new(One(Tiny), new LoraSettings(Rank: 2, Alpha: 2));

    [Theory]
    [MemberData(nameof(AllStrategies.Names), MemberType = typeof(AllStrategies))]
    public void Constructor_RankAboveMinOfCAndO_ThrowsNamingTheLayer(string name)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => AllStrategies.Create(name, rank: 5));
        Assert.Contains("exceeds min(C, O) = 4 of layer wide", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Constructor_BadSetup_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new FedItStrategy(One(Tiny), new LoraSettings(Rank: 0, Alpha: 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FedItStrategy(One(Tiny), new LoraSettings(Rank: 1, Alpha: float.NaN)));
        Assert.Throws<ArgumentException>(() => new FedItStrategy([Tiny, Tiny], new LoraSettings(Rank: 1, Alpha: 2)));
        Assert.Throws<ArgumentException>(() => new FedItStrategy([], new LoraSettings(Rank: 1, Alpha: 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HetLoraStrategy(One(Tiny), new LoraSettings(1, 2), new HetLoraRegularizer(Gamma: 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FsLoraStrategy(One(Tiny), new LoraSettings(1, 2), new FsLoraOptions(ServerLearningRate: 0)));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-0.5)]
    [InlineData(1.0000001)]
    [InlineData(double.NaN)]
    public void OfRatio_OutsideZeroToOne_Throws(double ratio)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => ClientBudget.OfRatio(ratio));
        Assert.Contains("(0, 1]", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0.3, 10, 3)]
    [InlineData(0.25, 8, 2)]
    [InlineData(0.3, 8, 3)]
    [InlineData(0.01, 8, 1)]
    [InlineData(1.0, 8, 8)]
    public void RankFor_Ratio_IsCeilOfRatioTimesRank(double ratio, int rank, int expected) =>
        Assert.Equal(expected, ClientBudget.OfRatio(ratio).RankFor(rank, clientId: 0));

    [Fact]
    public void FromRanks_LengthDiffersFromClientCount_Throws()
    {
        var error = Assert.Throws<ArgumentException>(() => ClientBudget.FromRanks([2, 4, 8], clientCount: 4));
        Assert.Contains("3 ranks given for 4 clients", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => ClientBudget.FromRatios([0.5], clientCount: 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => ClientBudget.FromRanks([2, 0], clientCount: 2));
        Assert.Equal([ClientBudget.OfRank(2), ClientBudget.OfRank(4)], ClientBudget.FromRanks([2, 4], clientCount: 2));
    }

    [Fact]
    public void ConfigureRound_RankBudgetAboveGlobalRank_Throws()
    {
        var strategy = new ZeroPaddingStrategy(One(Tiny), new LoraSettings(Rank: 1, Alpha: 2));
        var error = Assert.Throws<ArgumentException>(() => strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(3, 1, 2)], new Random(2)));
        Assert.Contains("client 3 has a rank budget of 2, above the global rank 1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ConfigureRound_BadClients_Throw()
    {
        var strategy = FedIt();
        var state = strategy.Initialize(new Random(1));
        Assert.Contains("no sampled clients", Assert.Throws<ArgumentException>(() => strategy.ConfigureRound(0, state, [], new Random(2))).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => strategy.ConfigureRound(0, state, [Client(0, 0, 2)], new Random(2)));
        Assert.Throws<ArgumentException>(() => strategy.ConfigureRound(0, state, [Client(0, 1, 2), Client(0, 1, 2)], new Random(2)));
        Assert.Throws<ArgumentException>(() => strategy.ConfigureRound(1, state, [Client(0, 1, 2)], new Random(2)));
    }

    [Fact]
    public void Aggregate_BadUpdates_Throw()
    {
        var strategy = FedIt();
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 2), Client(1, 1, 2)], new Random(2));
        var good = Shifted(plan.Assignments[0], 1);
        var module = good.Modules[0];

        Assert.Contains("received no updates", Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [])).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [good, good]));
        Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [new ClientUpdate(7, 0, 2, good.Modules)]));
        Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [new ClientUpdate(0, 1, 2, good.Modules)]));
        Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [new ClientUpdate(0, 0, 2, [module with { A = null }])]));
        Assert.Throws<ArgumentException>(() => new ClientUpdate(0, 0, 2, [module with { B = [1, 2, 3] }]));
        var infinite = (float[])module.B.Clone();
        infinite[3] = float.PositiveInfinity;
        var error = Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [new ClientUpdate(0, 0, 2, [module with { B = infinite }])]));
        Assert.Contains("non-finite B[3]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Aggregate_Stragglers_NormalisesPOverTheClientsWhoReported()
    {
        var strategy = FedIt();
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 2), Client(1, 100, 2), Client(2, 3, 2)], new Random(2));

        var next = strategy.Aggregate(plan, state,
        [
            Update(plan.Assignments[2], a: [4, 4, 4, 4], b: [4, 4, 4, 4]),
            Update(plan.Assignments[0], a: [0, 0, 0, 0], b: [8, 8, 8, 8]),
        ]).State.Adapters[0];

        // p over clients 0 and 2 only: (1/4, 3/4).
        Assert.Equal([3f, 3, 3, 3], next.A);
        Assert.Equal([5f, 5, 5, 5], next.B);
    }
}
