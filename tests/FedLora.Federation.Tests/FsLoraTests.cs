using FedLora.Lora;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class FsLoraTests
{
    private static LoraModuleSpec Wide { get; } = new("wide", InFeatures: 5, OutFeatures: 3);
    private static LoraModuleSpec Tall { get; } = new("tall", InFeatures: 4, OutFeatures: 6);

    /// <summary>A rank-r global adapter whose rank j is marked: A[j,:] = j + 1, B[:,j] = 10 (j + 1).</summary>
    private static GlobalState MarkedState(LoraModuleSpec module, int rank, float alpha = 2)
    {
        var adapter = HostAdapter.Zero(module, rank);
        for (var j = 0; j < rank; j++)
        {
            adapter.A.AsSpan(j * module.InFeatures, module.InFeatures).Fill(j + 1);
            for (var o = 0; o < module.OutFeatures; o++) adapter.B[o * rank + j] = 10 * (j + 1);
        }
        return new GlobalState(0, [adapter], alpha, LoraScaling.Standard);
    }

    [Fact]
    public void ConfigureRound_Sketch_AAndBShareOneIndexSet()
    {
        var strategy = new FsLoraStrategy([Wide], new LoraSettings(Rank: 3, Alpha: 2));
        var plan = strategy.ConfigureRound(0, MarkedState(Wide, 3), [RatioClient(0, 1, 0.5), RatioClient(1, 1, 0.34)], new Random(7));

        foreach (var assignment in plan.Assignments)
        {
            var indices = assignment.RankIndices![0];
            var start = assignment.Start[0];
            Assert.Equal(2, indices.Length);
            for (var j = 0; j < indices.Length; j++)
            {
                Assert.All(start.A.AsSpan(j * 5, 5).ToArray(), value => Assert.Equal(indices[j] + 1, value));
                for (var o = 0; o < 3; o++) Assert.Equal(10 * (indices[j] + 1), start.B[o * 2 + j]);
            }
        }
    }

    [Fact]
    public void ConfigureRound_Sketch_ScaleIsSTimesROverM()
    {
        var strategy = new FsLoraStrategy([Wide], new LoraSettings(Rank: 3, Alpha: 6));
        var plan = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [RatioClient(0, 1, 0.3), RatioClient(1, 1, 1)], new Random(2));

        // s = 6/3 = 2; m = ceil(0.3 * 3) = 1 gives 2 * 3/1, m = 3 gives 2.
        Assert.Equal([1, 3], plan.Assignments.Select(assignment => assignment.Rank));
        Assert.Equal([6f, 2f], plan.Assignments.Select(assignment => assignment.Scale));
        Assert.All(plan.Assignments, assignment => Assert.Equal(3, assignment.AdapterRank));
    }

    [Fact]
    public void ConfigureRound_ManyDraws_MeanSketchIsTheIdentity()
    {
        // S = (r/m) diag(1[i in I]); E[S] = I. Each diagonal entry's mean over N draws has standard deviation
        // sqrt((r/m - 1) / N) = sqrt((8/3 - 1) / 20000) ~ 0.009, so 0.05 is more than 5 sigma.
        const int rank = 8, m = 3, draws = 20000;
        var module = new LoraModuleSpec("m", 8, 8);
        var strategy = new FsLoraStrategy([module], new LoraSettings(Rank: rank, Alpha: 8));
        var state = strategy.Initialize(new Random(1));
        var random = new Random(2);
        var diagonal = new double[rank];
        for (var draw = 0; draw < draws; draw++)
        {
            var plan = strategy.ConfigureRound(0, state, [Client(0, 1, m)], random);
            foreach (var index in plan.Assignments[0].RankIndices![0]) diagonal[index] += (double)rank / m / draws;
        }
        Assert.All(diagonal, value => Assert.InRange(value, 0.95, 1.05));
    }

    [Fact]
    public void ConfigureRound_ManyDraws_SketchedProductIsUnbiased()
    {
        const int rank = 4, m = 2, draws = 20000;
        var module = new LoraModuleSpec("m", 4, 4);
        var strategy = new FsLoraStrategy([module], new LoraSettings(Rank: rank, Alpha: 4));
        var random = new Random(3);
        var global = new HostAdapter(module, rank, Values(random, rank * 4), Values(random, 4 * rank));
        var state = new GlobalState(0, [global], 4, LoraScaling.Standard);
        var mean = new double[16];
        for (var draw = 0; draw < draws; draw++)
        {
            var sub = strategy.ConfigureRound(0, state, [Client(0, 1, m)], random).Assignments[0].Start[0];
            mean = Add(mean, Product(sub.B, sub.A, m, 4, 4, (double)rank / m / draws));
        }
        // E[B S A] = B A; each entry's mean is within a few hundredths of it at this many draws.
        var exact = Product(global);
        for (var i = 0; i < 16; i++) Assert.True(Math.Abs(mean[i] - exact[i]) < 0.05, $"[{i}] E[B S A] = {mean[i]}, B A = {exact[i]}");
    }

    [Fact]
    public void Aggregate_EveryRatioOne_AveragesFullRankChanges()
    {
        var strategy = new FsLoraStrategy([Wide, Tall], new LoraSettings(Rank: 3, Alpha: 2));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [RatioClient(0, 5, 1), RatioClient(1, 1, 1), RatioClient(2, 2, 1)], new Random(2));
        var random = new Random(3);
        var updates = plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray();

        var next = strategy.Aggregate(plan, state, updates).State;

        for (var module = 0; module < 2; module++)
        {
            Assert.All(plan.Assignments, assignment => Assert.Equal([0, 1, 2], assignment.RankIndices![module]));
            var before = state.Adapters[module];
            var expectedA = before.A.Select((x, i) => x + updates.Average(u => (double)u.Modules[module].A![i] - x)).ToArray();
            var expectedB = before.B.Select((x, i) => x + updates.Average(u => (double)u.Modules[module].B[i] - x)).ToArray();
            AssertClose(expectedA, next.Adapters[module].A, 1e-6, "A");
            AssertClose(expectedB, next.Adapters[module].B, 1e-6, "B");
        }
    }

    [Fact]
    public void Aggregate_OneClient_ChangesOnlyItsIndices()
    {
        var strategy = new FsLoraStrategy([Wide], new LoraSettings(Rank: 3, Alpha: 2));
        var state = MarkedState(Wide, 3);
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 1)], new Random(5));
        var chosen = plan.Assignments[0].RankIndices![0].Single();

        var next = strategy.Aggregate(plan, state, [Shifted(plan.Assignments[0], 1)]).State.Adapters[0];

        for (var j = 0; j < 3; j++)
        {
            var change = j == chosen ? 1 : 0;
            Assert.All(next.A.AsSpan(j * 5, 5).ToArray(), value => Assert.Equal(j + 1 + change, value));
            for (var o = 0; o < 3; o++) Assert.Equal(10 * (j + 1) + change, next.B[o * 3 + j]);
        }
    }

    [Fact]
    public void Aggregate_TwoClients_MeanOfScatteredChangesOverM()
    {
        // Two clients with one rank each: every changed rank moves by its client's change / M, M = 2.
        var strategy = new FsLoraStrategy([Wide], new LoraSettings(Rank: 3, Alpha: 2));
        var state = MarkedState(Wide, 3);
        var plan = strategy.ConfigureRound(0, state, [Client(0, 100, 1), Client(1, 1, 1)], new Random(11));
        var (first, second) = (plan.Assignments[0].RankIndices![0][0], plan.Assignments[1].RankIndices![0][0]);

        var next = strategy.Aggregate(plan, state, [Shifted(plan.Assignments[0], 2), Shifted(plan.Assignments[1], 4)]).State.Adapters[0];

        for (var j = 0; j < 3; j++)
        {
            var change = (j == first ? 2 / 2.0 : 0) + (j == second ? 4 / 2.0 : 0);
            Assert.Equal(j + 1 + change, next.A[j * 5], 5);
            Assert.Equal(10 * (j + 1) + change, next.B[j], 5);
        }
    }

    [Fact]
    public void Aggregate_ServerLearningRate_ScalesTheMeanChange()
    {
        var strategy = new FsLoraStrategy([Wide], new LoraSettings(Rank: 3, Alpha: 2), new FsLoraOptions(ServerLearningRate: 0.5));
        var state = MarkedState(Wide, 3);
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 3)], new Random(5));

        var next = strategy.Aggregate(plan, state, [Shifted(plan.Assignments[0], 1)]).State.Adapters[0];

        Assert.Equal([1.5f, 1.5f, 1.5f, 1.5f, 1.5f], next.A.AsSpan(0, 5).ToArray());
    }

    [Fact]
    public void Aggregate_ServerAdam_TakesAFedAdamStep()
    {
        var adam = new FedAdamOptions(Beta1: 0.9, Beta2: 0.99, Tau: 1e-3);
        var strategy = new FsLoraStrategy([Wide], new LoraSettings(Rank: 3, Alpha: 2), new FsLoraOptions(ServerLearningRate: 0.1, ServerAdam: adam));
        var state = strategy.Initialize(new Random(1));
        var plan = strategy.ConfigureRound(0, state, [Client(0, 1, 3)], new Random(5));

        var next = strategy.Aggregate(plan, state, [Shifted(plan.Assignments[0], 1)]).State;

        // g = 1: m = 0.1, v = 0.01, step = 0.1 * 0.1 / (sqrt(0.01) + 1e-3) = 0.01 / 0.101.
        var step = 0.01 / 0.101;
        AssertClose(state.Adapters[0].A.Select(x => x + step).ToArray(), next.Adapters[0].A, 1e-6, "A");
        Assert.Equal(1, next.ServerOptimizer!.Step);
        Assert.All(next.ServerOptimizer.FirstMoment[0].B, value => Assert.Equal(0.1f, value, 6));
        Assert.All(next.ServerOptimizer.SecondMoment[0].B, value => Assert.Equal(0.01f, value, 6));
    }

    [Fact]
    public void Upload_Sketch_IsMTimesOPlusCValuesAndMIndicesPerModule()
    {
        var strategy = new FsLoraStrategy([Wide, Tall], new LoraSettings(Rank: 3, Alpha: 2));
        var plan = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(0, 1, 2)], new Random(2));
        var update = Shifted(plan.Assignments[0], 1);

        var floats = update.Upload.Where(tensor => tensor.Dtype == "F32").Sum(tensor => tensor.ElementCount);
        var indices = update.Upload.Where(tensor => tensor.Dtype == "I32").Sum(tensor => tensor.ElementCount);
        Assert.Equal(2 * (3 + 5) + 2 * (6 + 4), floats);
        Assert.Equal(2 + 2, indices);
        Assert.Equal(4L * (floats + indices), update.UploadBytes);
        Assert.Equal(update.UploadBytes, plan.Assignments[0].DownloadBytes);
    }
}
