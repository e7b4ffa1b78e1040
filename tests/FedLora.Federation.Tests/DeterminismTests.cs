namespace FedLora.Federation.Tests;

public sealed class DeterminismTests
{
    private static IEnumerable<object> Describe(RoundPlan plan) =>
        plan.Assignments.SelectMany(assignment => new object[] { assignment.ClientId, assignment.Rank, assignment.Alpha, assignment.Scale, assignment.FreshSeed ?? -1 }
            .Concat(assignment.Start.SelectMany(start => start.A.Concat(start.B).Cast<object>()))
            .Concat((assignment.RankIndices ?? []).SelectMany(indices => indices).Cast<object>()));

    private static float[] Flatten(GlobalState state) => state.Adapters.SelectMany(adapter => adapter.A.Concat(adapter.B)).ToArray();

    [Theory]
    [MemberData(nameof(AllStrategies.Names), MemberType = typeof(AllStrategies))]
    public void ConfigureRound_SameSeed_SameAssignments(string name)
    {
        var strategy = AllStrategies.Create(name);
        var state = AllStrategies.Run(strategy, rounds: 2, seed: 8);
        var again = AllStrategies.Run(AllStrategies.Create(name), rounds: 2, seed: 8);

        var plan = strategy.ConfigureRound(2, state, AllStrategies.Clients(strategy), new Random(9));
        var replay = strategy.ConfigureRound(2, again, AllStrategies.Clients(strategy), new Random(9));

        Assert.Equal(Flatten(state), Flatten(again));
        Assert.Equal(Describe(plan), Describe(replay));
    }

    [Theory]
    [MemberData(nameof(AllStrategies.Names), MemberType = typeof(AllStrategies))]
    public void Aggregate_UpdatesInAnyArrivalOrder_SameState(string name)
    {
        var strategy = AllStrategies.Create(name);
        var state = AllStrategies.Run(strategy, rounds: 1, seed: 8);
        var plan = strategy.ConfigureRound(1, state, AllStrategies.Clients(strategy), new Random(9));
        var random = new Random(10);
        var updates = plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray();

        var forward = strategy.Aggregate(plan, state, updates);
        var backward = strategy.Aggregate(plan, state, updates.Reverse().ToArray());

        Assert.Equal(Flatten(forward.State), Flatten(backward.State));
        Assert.Equal(forward.BaseUpdate?.SelectMany(update => update.B.Concat(update.A).Concat(update.RowWeights)),
            backward.BaseUpdate?.SelectMany(update => update.B.Concat(update.A).Concat(update.RowWeights)));
    }

    [Fact]
    public void ConfigureRound_OtherSeed_OtherSketches()
    {
        var strategy = AllStrategies.Create("fslora");
        var state = strategy.Initialize(new Random(1));
        var sketches = Enumerable.Range(0, 5)
            .Select(seed => string.Join(";", strategy.ConfigureRound(0, state, AllStrategies.Clients(strategy), new Random(seed))
                .Assignments.SelectMany(assignment => assignment.RankIndices!).Select(indices => string.Join(",", indices))))
            .Distinct()
            .Count();

        Assert.True(sketches > 1, "every seed drew the same index sets");
    }
}
