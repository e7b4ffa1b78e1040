using FedLora.Lora;
using MathNet.Numerics.LinearAlgebra;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class FlexLoraTests
{
    private static LoraModuleSpec Module { get; } = new("m", InFeatures: 5, OutFeatures: 6);

    /// <summary>One aggregated round from clients of the given ranks; returns the state and the dense Delta W.</summary>
    private static (FlexLoraStrategy Strategy, GlobalState State, double[] DeltaW) AggregatedRound(params int[] ranks)
    {
        var strategy = new FlexLoraStrategy([Module], new LoraSettings(Rank: 3, Alpha: 4, ClientScale: ClientScaleRule.SameAlpha));
        var state = strategy.Initialize(new Random(1));
        var clients = ranks.Select((rank, id) => Client(id, 2 + id, rank)).ToArray();
        var plan = strategy.ConfigureRound(0, state, clients, new Random(2));
        var random = new Random(3);
        var updates = plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray();
        var total = clients.Sum(client => (double)client.ExampleCount);
        var deltaW = new double[6 * 5];
        for (var k = 0; k < updates.Length; k++)
        {
            var factors = updates[k].Modules[0];
            deltaW = Add(deltaW, Product(factors.B, factors.A!, ranks[k], 5, 6, clients[k].ExampleCount / total * plan.Assignments[k].Scale));
        }
        return (strategy, strategy.Aggregate(plan, state, updates).State, deltaW);
    }

    [Fact]
    public void ConfigureRound_RoundZero_FreshAdaptersFromSeeds()
    {
        var strategy = new FlexLoraStrategy([Module], new LoraSettings(Rank: 3, Alpha: 4));
        var plan = strategy.ConfigureRound(0, strategy.Initialize(new Random(1)), [Client(0, 1, 2)], new Random(2));

        var assignment = plan.Assignments[0];
        Assert.Equal(HostAdapter.Fresh(assignment.Modules, 2, new Random(assignment.FreshSeed!.Value))[0].A, assignment.Start[0].A);
    }

    [Theory]
    [InlineData(new[] { 1, 3 })]
    [InlineData(new[] { 3, 3, 2 })]
    public void Aggregate_HeterogeneousRanks_StateIsTheWeightedSumOfProducts(int[] ranks)
    {
        var (_, state, deltaW) = AggregatedRound(ranks);

        Assert.Equal(1f, state.Scale);
        AssertClose(deltaW, Product(state.Adapters[0]), 1e-5, "U Sigma V^T");
    }

    [Theory]
    [InlineData(new[] { 1, 3 }, 2)]
    [InlineData(new[] { 1, 3 }, 3)]
    [InlineData(new[] { 3, 3, 2 }, 2)]
    public void ConfigureRound_AfterAggregation_ClientGetsTheDenseRankRTruncation(int[] ranks, int clientRank)
    {
        var (strategy, state, deltaW) = AggregatedRound(ranks);
        var svd = Matrix<double>.Build.DenseOfRowMajor(6, 5, deltaW).Svd(computeVectors: true);
        var truncation = new double[6 * 5];
        for (var i = 0; i < 6; i++)
        {
            for (var c = 0; c < 5; c++)
            {
                for (var j = 0; j < clientRank; j++) truncation[i * 5 + c] += svd.U[i, j] * svd.S[j] * svd.VT[j, c];
            }
        }

        var assignment = strategy.ConfigureRound(1, state, [Client(0, 1, clientRank)], new Random(4)).Assignments[0];
        var received = Product(assignment.Start[0], assignment.Scale);

        // s_k = 4 / r_k: the client's B already carries 1 / s_k.
        Assert.Equal(4f / clientRank, assignment.Scale);
        AssertClose(truncation, received, 1e-5, "s_k B_k A_k");
        // Eckart-Young: the error of the best rank-r approximation is the tail of the spectrum.
        var tail = svd.S.Skip(clientRank).Sum(sigma => sigma * sigma);
        Assert.Equal(tail, Math.Pow(FrobeniusNorm(Subtract(deltaW, received)), 2), 5);
    }

    [Fact]
    public void ConfigureRound_ClientRankAboveTheUpdatesRank_ExtraRanksStartFresh()
    {
        var (strategy, state, deltaW) = AggregatedRound(1);
        Assert.Equal(1, state.Rank);

        var assignment = strategy.ConfigureRound(1, state, [Client(0, 1, 3)], new Random(4)).Assignments[0];

        var start = assignment.Start[0];
        AssertClose(deltaW, Product(start, assignment.Scale), 1e-5, "s_k B_k A_k");
        Assert.True(start.A.AsSpan(5).ContainsAnyExcept(0f), "the extra A rows must be drawn, not zero");
        for (var o = 0; o < 6; o++) Assert.Equal([0f, 0f], start.B.AsSpan(o * 3 + 1, 2).ToArray());
    }
}
