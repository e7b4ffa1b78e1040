using FedLora.Kernels.Reference;
using FedLora.Lora;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class AdapterExchangeTests : IDisposable
{
    private readonly ReferenceBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    [Theory]
    [MemberData(nameof(AllStrategies.Names), MemberType = typeof(AllStrategies))]
    public void CreateThenCollect_NoTraining_UploadsTheStart(string name)
    {
        var strategy = AllStrategies.Create(name);
        var state = AllStrategies.Run(strategy, rounds: 1, seed: 5);
        var plan = strategy.ConfigureRound(1, state, AllStrategies.Clients(strategy), new Random(6));

        var updates = plan.Assignments.Select(assignment =>
        {
            using var adapters = AdapterExchange.Create(_backend, assignment);
            return AdapterExchange.Collect(assignment, adapters);
        }).ToArray();

        for (var k = 0; k < updates.Length; k++)
        {
            var (assignment, update) = (plan.Assignments[k], updates[k]);
            Assert.Equal(assignment.Rank, update.Rank);
            for (var m = 0; m < assignment.Modules.Count; m++)
            {
                Assert.Equal(assignment.Trainable == TrainableFactors.BOnly ? null : assignment.Start[m].A, update.Modules[m].A);
                Assert.Equal(assignment.Start[m].B, update.Modules[m].B);
            }
        }
        strategy.Aggregate(plan, state, updates);
    }

    [Fact]
    public void Collect_FfaLoraAChangedOnTheDevice_Throws()
    {
        var strategy = AllStrategies.Create("ffa-lora");
        var assignment = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), AllStrategies.Clients(strategy), new Random(2)).Assignments[0];
        using var adapters = AdapterExchange.Create(_backend, assignment);

        _backend.Fill(adapters.Adapters[1].A.Slice(0, 1), 9f);

        var error = Assert.Throws<InvalidOperationException>(() => AdapterExchange.Collect(assignment, adapters));
        Assert.Contains("only B is trainable", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Collect_HetLoraTailShrank_UploadsThePrunedRank()
    {
        var module = new LoraModuleSpec("m", 8, 8);
        var strategy = new HetLoraStrategy([module], new LoraSettings(Rank: 8, Alpha: 16));
        var random = new Random(3);
        var state = new GlobalState(0, [new HostAdapter(module, 8, Values(random, 64), Values(random, 64))], 16, LoraScaling.Standard);
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 8)], new Random(4));
        using var adapters = AdapterExchange.Create(_backend, plan.Assignments[0]);

        // The penalty did its work: the tail rank (t = floor(0.99 * 8) = 7) shrank to zero in A.
        _backend.Fill(adapters.Adapters[0].A.Slice(7 * 8, 8), 0f);
        var update = AdapterExchange.Collect(plan.Assignments[0], adapters);

        Assert.Equal(7, update.Rank);
        Assert.Equal(7, strategy.Aggregate(plan, state, [update]).State.ClientRanks[0]);
    }

    [Fact]
    public void Load_AdapterSetOfAnotherRank_Throws()
    {
        var strategy = AllStrategies.Create("fslora");
        var assignment = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), AllStrategies.Clients(strategy), new Random(2)).Assignments[0];
        using var adapters = new AdapterSet(_backend, AllStrategies.Modules, assignment.Rank, assignment.Alpha, assignment.Scaling);

        var error = Assert.Throws<ArgumentException>(() => AdapterExchange.Load(assignment, adapters));
        Assert.Contains("needs 3", error.Message, StringComparison.Ordinal);
    }
}
