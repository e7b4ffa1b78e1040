using FedLora.Federation;
using FedLora.Kernels.Cpu;
using FedLora.Lora;
using FedLora.Model.Data;
using FedLora.Runtime;

namespace FedLora.ExternalStrategy.Tests;

/// <summary>
/// A strategy written outside FedLora: its math on hand-computed arrays, the validation it inherits
/// from the public API, and a run of FedLora's in-process round loop driving it (the same job over the
/// network is <see cref="CoordinateMedianNetworkTests"/>).
/// </summary>
public sealed class CoordinateMedianStrategyTests : IDisposable
{
    private static readonly LoraModuleSpec Module = new("layer", InFeatures: 2, OutFeatures: 2);
    private readonly CpuBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    private static SampledClient Client(int id) => new(id, ExampleCount: 10 * (id + 1), ClientBudget.OfRank(1));

    private static ClientUpdate Update(int clientId, float[] a, float[] b) => new(clientId, round: 0, rank: 1, [new ModuleUpdate(Module, a, b)]);

    [Fact]
    public void Aggregate_ThreeClients_TakesTheMiddleValueOfEveryCoordinate()
    {
        var strategy = new CoordinateMedianStrategy([Module], new LoraSettings(1, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0), Client(1), Client(2)], new Random(2));

        var next = strategy.Aggregate(plan, state,
        [
            Update(2, a: [2, 7], b: [9, 2]),
            Update(0, a: [1, 5], b: [0, 4]),
            Update(1, a: [3, -2], b: [-1, 1]),
        ]).State;

        // A: medians of {1, 3, 2} and {5, -2, 7}; B: of {0, -1, 9} and {4, 1, 2}. The data weights (10, 20, 30) play no part.
        Assert.Equal(1, next.Round);
        Assert.Equal([2f, 5f], next.Adapters[0].A);
        Assert.Equal([0f, 2f], next.Adapters[0].B);
    }

    [Fact]
    public void Aggregate_FourClients_AveragesTheTwoMiddleValues()
    {
        var strategy = new CoordinateMedianStrategy([Module], new LoraSettings(1, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0), Client(1), Client(2), Client(3)], new Random(2));

        var next = strategy.Aggregate(plan, state,
        [
            Update(0, a: [1, 0], b: [4, 8]),
            Update(1, a: [2, 0], b: [-4, 8]),
            Update(2, a: [10, 0], b: [6, 8]),
            Update(3, a: [-10, 1], b: [5, 0]),
        ]).State;

        // A: (1 + 2) / 2 and (0 + 0) / 2; B: (4 + 5) / 2 and (8 + 8) / 2.
        Assert.Equal([1.5f, 0f], next.Adapters[0].A);
        Assert.Equal([4.5f, 8f], next.Adapters[0].B);
    }

    [Fact]
    public void Aggregate_UpdatesTheAssignmentsDoNotAllow_AreRefusedByThePublicRules()
    {
        var strategy = new CoordinateMedianStrategy([Module], new LoraSettings(1, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0), Client(1)], new Random(2));

        var unsampled = Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [Update(5, [1, 1], [1, 1])]));
        Assert.Contains("client 5 was not sampled", unsampled.Message, StringComparison.Ordinal);
        var notFinite = Assert.Throws<ArgumentException>(() => strategy.Aggregate(plan, state, [Update(0, [1, float.NaN], [1, 1])]));
        Assert.Contains("non-finite A[1]", notFinite.Message, StringComparison.Ordinal);
        var twice = Assert.Throws<ArgumentException>(() => new RoundPlan(0, [plan.Assignments[0], plan.Assignments[0]]));
        Assert.Contains("client 0 has two assignments", twice.Message, StringComparison.Ordinal);
        var wrongStart = Assert.Throws<ArgumentException>(() => new ClientAssignment(0, Client(0), 2, 2, 2f, LoraScaling.Standard, 1f, state.Adapters, TrainableFactors.Both));
        Assert.Contains("has rank 1, but the assignment's rank is 2", wrongStart.Message, StringComparison.Ordinal);
    }

    /// <summary>Records what the round loop hands the strategy, and passes everything through.</summary>
    private sealed class Recording(IFederatedStrategy inner) : IFederatedStrategy
    {
        public List<(GlobalState Before, IReadOnlyList<ClientUpdate> Updates, GlobalState After)> Rounds { get; } = [];

        public string Name => inner.Name;

        public IReadOnlyList<LoraModuleSpec> Modules => inner.Modules;

        public LoraSettings Settings => inner.Settings;

        public GlobalState Initialize(Random random) => inner.Initialize(random);

        public RoundPlan ConfigureRound(int round, GlobalState state, IReadOnlyList<SampledClient> clients, Random random) =>
            inner.ConfigureRound(round, state, clients, random);

        public AggregationResult Aggregate(RoundPlan plan, GlobalState state, IReadOnlyList<ClientUpdate> updates)
        {
            var result = inner.Aggregate(plan, state, updates);
            Rounds.Add((state, [.. updates], result.State));
            return result;
        }
    }

    [Fact]
    public void Simulation_TwoRoundsOfTheMedian_GlobalAdapterIsTheMedianOfTheTrainedUpdates()
    {
        using var model = MedianJob.NewModel(_backend);
        var median = MedianJob.Strategy(model);
        var modules = median.Modules;
        var strategy = new Recording(median);
        var clients = Enumerable.Range(0, MedianJob.Clients).Select(id =>
        {
            var examples = MedianJob.ClientExamples(id);
            return new FederatedClient(id, examples.Count, ClientBudget.OfRank(MedianJob.Rank), seed => new InstructionBatcher(examples, MedianJob.Batch, MedianJob.Time, seed));
        }).ToList();
        var evaluation = new[] { new EvaluationSet("all", InstructionBatcher.InOrder(MedianJob.Examples(9, 2), MedianJob.Batch, MedianJob.Time).ToList()) };
        var options = new SimulationOptions(MedianJob.Rounds, MedianJob.ClientsPerRound, MedianJob.Local, MedianJob.Seed);
        var simulation = new FederatedSimulation(strategy, model, clients, evaluation, options);

        var results = simulation.Run();

        Assert.Equal(2, results.Count);
        Assert.All(results, r => Assert.True(double.IsFinite(r.Evaluation["all"])));
        Assert.Equal(2, strategy.Rounds.Count);
        foreach (var (before, updates, after) in strategy.Rounds)
        {
            Assert.Equal(3, updates.Count);
            for (var m = 0; m < modules.Count; m++)
            {
                // Training moved every client's factors, and the three clients moved them differently.
                Assert.All(updates, u => Assert.False(u.Modules[m].A!.AsSpan().SequenceEqual(before.Adapters[m].A)));
                Assert.False(updates[0].Modules[m].B.AsSpan().SequenceEqual(updates[1].Modules[m].B));
                Assert.Equal(MedianJob.MiddleOfThree(updates.Select(u => u.Modules[m].A!).ToList()), after.Adapters[m].A);
                Assert.Equal(MedianJob.MiddleOfThree(updates.Select(u => u.Modules[m].B).ToList()), after.Adapters[m].B);
            }
        }
        Assert.Same(strategy.Rounds[0].After, strategy.Rounds[1].Before);
        Assert.Same(strategy.Rounds[^1].After, simulation.State);
    }
}
