using FedLora.Kernels.Reference;
using FedLora.Lora;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

/// <summary>
/// One guard per bug DESIGN.md section 4 lists in published implementations: a sketch mask that never
/// matched a parameter (FSLoRA silently plain LoRA); A and B sketched with different index sets;
/// FedIT averaging that kept only the first client; stacked adapters merged with a scale other than
/// the one clients trained with.
/// </summary>
public sealed class PublishedBugGuardTests : IDisposable
{
    private static LoraModuleSpec Module { get; } = new("m", InFeatures: 6, OutFeatures: 5);

    private readonly ReferenceBackend _backend = new();

    public void Dispose() => _backend.Dispose();

    /// <summary>FSLoRA at r = 4 from a global adapter with every A and B entry nonzero, one client at ratio 1/2.</summary>
    private static (FsLoraStrategy Strategy, GlobalState State, ClientAssignment Assignment) HalfSketch()
    {
        var strategy = new FsLoraStrategy([Module], new LoraSettings(Rank: 4, Alpha: 8));
        var random = new Random(21);
        var global = new HostAdapter(Module, 4, Values(random, 4 * 6), Values(random, 5 * 4));
        var state = new GlobalState(0, [global], 8, LoraScaling.Standard);
        var assignment = strategy.ConfigureRound(0, state, [RatioClient(0, 1, 0.5)], new Random(22)).Assignments[0];
        return (strategy, state, assignment);
    }

    /// <summary>One forward/backward of the module on random data and an SGD step on every adapter parameter, as a naive trainer would.</summary>
    private void TrainEveryParameter(AdapterSet adapters)
    {
        const int n = 3;
        var random = new Random(23);
        using var input = _backend.Allocate(n * 6);
        using var weight = _backend.Allocate(5 * 6);
        using var output = _backend.Allocate(n * 5);
        using var outputGrad = _backend.Allocate(n * 5);
        using var inputGrad = _backend.Allocate(n * 6);
        using var hidden = _backend.Allocate(n * adapters.MaxActiveRank);
        _backend.Upload(Values(random, n * 6), input);
        _backend.Upload(Values(random, 5 * 6), weight);
        _backend.Upload(Values(random, n * 5), outputGrad);
        var adapter = adapters.Adapters[0];
        var (indices, scale) = (adapters.ActiveIndices(0), adapters.ActiveScale(0));
        _backend.Fill(adapters.Gradients, 0f);
        adapter.Forward(_backend, n, input, weight, null, indices, scale, hidden, output);
        adapter.Backward(_backend, n, outputGrad, input, weight, indices, scale, hidden, inputGrad, null, null,
            adapters.GradientOfA(0), adapters.GradientOfB(0));
        _backend.Sgd(0.1f, 0f, adapters.Gradients, null, adapters.Parameters);
    }

    // ---------------------------------------------------------------- a sketch mask that never matched

    [Fact]
    public void SketchMask_LoadedAssignment_MatchesTheModelsParameters()
    {
        var (_, _, assignment) = HalfSketch();
        using var adapters = AdapterExchange.Create(_backend, assignment);

        Assert.Equal(assignment.RankIndices![0], adapters.ActiveIndices(0));
        Assert.Equal(assignment.Scale, adapters.ActiveScale(0));
        Assert.Equal(2 * 4f / 2, assignment.Scale);
    }

    [Fact]
    public void SketchMask_TrainingEveryParameter_MovesOnlyTheSketchedRanks()
    {
        var (strategy, state, assignment) = HalfSketch();
        using var adapters = AdapterExchange.Create(_backend, assignment);

        TrainEveryParameter(adapters);
        var update = AdapterExchange.Collect(assignment, adapters);

        Assert.NotEqual(assignment.Start[0].A, update.Modules[0].A);
        Assert.NotEqual(assignment.Start[0].B, update.Modules[0].B);
        var next = strategy.Aggregate(new[] { assignment }.ToPlan(), state, [update]).State.Adapters[0];
        var indices = assignment.RankIndices![0];
        for (var j = 0; j < 4; j++)
        {
            var rowMoved = !next.A.AsSpan(j * 6, 6).SequenceEqual(state.Adapters[0].A.AsSpan(j * 6, 6));
            Assert.Equal(indices.Contains(j), rowMoved);
        }
    }

    [Fact]
    public void SketchMask_TrainerDropsTheSketch_CollectThrows()
    {
        var (_, _, assignment) = HalfSketch();
        using var adapters = AdapterExchange.Create(_backend, assignment);

        adapters.SetSketch(0, null);
        TrainEveryParameter(adapters);

        var error = Assert.Throws<InvalidOperationException>(() => AdapterExchange.Collect(assignment, adapters));
        Assert.Contains("assignment is ranks", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void SketchMask_RankOutsideTheSketchWritten_CollectThrows()
    {
        var (_, _, assignment) = HalfSketch();
        using var adapters = AdapterExchange.Create(_backend, assignment);
        var outside = Enumerable.Range(0, 4).First(j => !assignment.RankIndices![0].Contains(j));

        _backend.Fill(adapters.Adapters[0].A.Slice(outside * 6, 6), 0.5f);

        var error = Assert.Throws<InvalidOperationException>(() => AdapterExchange.Collect(assignment, adapters));
        Assert.Contains("outside its sketch", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void SketchMask_FullRankUpload_IsRejected()
    {
        var (strategy, state, assignment) = HalfSketch();
        var everything = new ClientUpdate(0, 0, 4, [new ModuleUpdate(Module, state.Adapters[0].A, state.Adapters[0].B, [0, 1, 2, 3])]);

        var error = Assert.Throws<ArgumentException>(() => strategy.Aggregate(new[] { assignment }.ToPlan(), state, [everything]));
        Assert.Contains("uploaded rank 4 but was assigned rank 2", error.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- A and B sketched with different index sets

    [Fact]
    public void IndexSets_LoadedSketch_PutsAsRowsAndBsColumnsAtTheSameRanks()
    {
        var (_, state, assignment) = HalfSketch();
        using var adapters = AdapterExchange.Create(_backend, assignment);

        var a = _backend.ToArray(adapters.Adapters[0].A);
        var b = _backend.ToArray(adapters.Adapters[0].B);
        var global = state.Adapters[0];
        for (var j = 0; j < 4; j++)
        {
            var sketched = assignment.RankIndices![0].Contains(j);
            Assert.Equal(sketched, a.AsSpan(j * 6, 6).SequenceEqual(global.A.AsSpan(j * 6, 6)));
            Assert.Equal(sketched, Enumerable.Range(0, 5).All(o => b[o * 4 + j] == global.B[o * 4 + j]));
            if (!sketched) Assert.False(a.AsSpan(j * 6, 6).ContainsAnyExcept(0f) || Enumerable.Range(0, 5).Any(o => b[o * 4 + j] != 0));
        }
    }

    [Fact]
    public void IndexSets_UpdateWithAnotherIndexSet_IsRejected()
    {
        var (strategy, state, assignment) = HalfSketch();
        var other = Enumerable.Range(0, 4).Where(j => !assignment.RankIndices![0].Contains(j)).ToArray();
        var start = assignment.Start[0];
        var moved = new ClientUpdate(0, 0, 2, [new ModuleUpdate(Module, start.A, start.B, other)]);

        var error = Assert.Throws<ArgumentException>(() => strategy.Aggregate(new[] { assignment }.ToPlan(), state, [moved]));
        Assert.Contains("but its sketch is", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void IndexSets_Aggregate_ScattersAsRowsAndBsColumnsToTheSameRanks()
    {
        var (strategy, state, assignment) = HalfSketch();
        var start = assignment.Start[0];
        // Sub-rank j's A row and B column both move by 100 (j + 1).
        var a = start.A.Select((x, i) => x + 100f * (i / 6 + 1)).ToArray();
        var b = start.B.Select((x, i) => x + 100f * (i % 2 + 1)).ToArray();

        var next = strategy.Aggregate(new[] { assignment }.ToPlan(), state, [Update(assignment, a, b)]).State.Adapters[0];

        var global = state.Adapters[0];
        for (var j = 0; j < 4; j++)
        {
            var position = Array.IndexOf(assignment.RankIndices![0], j);
            var expected = position < 0 ? 0 : 100f * (position + 1);
            Assert.Equal(expected, next.A[j * 6] - global.A[j * 6], 3);
            Assert.Equal(expected, next.B[j] - global.B[j], 3);
        }
    }

    // ---------------------------------------------------------------- averaging that kept only the first client

    [Fact]
    public void FedItAveraging_TwoClients_UsesBothInEitherArrivalOrder()
    {
        var strategy = new FedItStrategy(One(Tiny), new LoraSettings(Rank: 2, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 2), Client(1, 1, 2)], new Random(2));
        var first = Update(plan.Assignments[0], a: [2, 0, 0, 2], b: [4, 0, 0, 4]);
        var second = Update(plan.Assignments[1], a: [0, 2, 2, 0], b: [0, 4, 4, 0]);

        var forward = strategy.Aggregate(plan, state, [first, second]).State.Adapters[0];
        var backward = strategy.Aggregate(plan, state, [second, first]).State.Adapters[0];

        Assert.Equal([1f, 1, 1, 1], forward.A);
        Assert.Equal([2f, 2, 2, 2], forward.B);
        Assert.Equal(forward.A, backward.A);
        Assert.Equal(forward.B, backward.B);
    }

    [Theory]
    [MemberData(nameof(AllStrategies.Names), MemberType = typeof(AllStrategies))]
    public void Averaging_LastClientChanges_ResultChanges(string name)
    {
        var strategy = AllStrategies.Create(name);
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, AllStrategies.Clients(strategy), new Random(2));
        var random = new Random(3);
        var updates = plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray();
        var changed = updates.ToArray();
        changed[^1] = Shifted(plan.Assignments[^1], 0.25f);

        var result = strategy.Aggregate(plan, state, updates);
        var other = strategy.Aggregate(plan, state, changed);

        Assert.NotEqual(Flatten(result), Flatten(other));
    }

    private static float[] Flatten(AggregationResult result) =>
        result.BaseUpdate is { } merged
            ? merged.SelectMany(update => Product(update)).Select(x => (float)x).ToArray()
            : result.State.Adapters.SelectMany(adapter => adapter.A.Concat(adapter.B)).ToArray();

    // ---------------------------------------------------------------- stacked merge with another scale

    [Fact]
    public void StackedMerge_HeterogeneousScales_UsesEachClientsTrainingScale()
    {
        var strategy = new FLoraStrategy([Module], new LoraSettings(Rank: 4, Alpha: 4, ClientScale: ClientScaleRule.SameAlpha));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 2, 1), Client(1, 3, 2), Client(2, 5, 4)], new Random(2));
        var random = new Random(3);
        var updates = plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray();

        var merged = Product(strategy.Aggregate(plan, state, updates).BaseUpdate![0]);

        // The scale each client's model really trained with, read from the AdapterSet it would train.
        var trainedScales = plan.Assignments.Select(assignment =>
        {
            using var adapters = AdapterExchange.Create(_backend, assignment);
            return (double)adapters.ActiveScale(0);
        }).ToArray();
        Assert.Equal([4.0, 2.0, 1.0], trainedScales);
        var p = new[] { 0.2, 0.3, 0.5 };
        var expected = new double[5 * 6];
        var stackedScale = new double[5 * 6];
        for (var k = 0; k < 3; k++)
        {
            var factors = updates[k].Modules[0];
            expected = Add(expected, Product(factors.B, factors.A!, updates[k].Rank, 6, 5, p[k] * trainedScales[k]));
            stackedScale = Add(stackedScale, Product(factors.B, factors.A!, updates[k].Rank, 6, 5, p[k] * 4.0 / 7));
        }
        AssertClose(expected, merged, 1e-6, "W update");
        Assert.True(FrobeniusNorm(Subtract(merged, stackedScale)) > 0.1, "one scale alpha / R for the stack would give another update");
    }

    [Fact]
    public void StackedMerge_ModelWithAnotherAlpha_LoadThrows()
    {
        var strategy = new FLoraStrategy([Module], new LoraSettings(Rank: 4, Alpha: 8));
        var assignment = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(0, 1, 2)], new Random(2)).Assignments[0];
        using var adapters = new AdapterSet(_backend, [Module], 2, alpha: 8, LoraScaling.Standard);

        var error = Assert.Throws<InvalidOperationException>(() => AdapterExchange.Load(assignment, adapters));
        Assert.Contains("did not train with", error.Message, StringComparison.Ordinal);
    }
}

internal static class PlanExtensions
{
    /// <summary>A plan from assignments already made (tests that reuse one assignment).</summary>
    public static RoundPlan ToPlan(this ClientAssignment[] assignments) => new(assignments[0].Round, assignments);
}
