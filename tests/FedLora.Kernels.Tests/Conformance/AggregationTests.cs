namespace FedLora.Kernels.Tests.Conformance;

/// <summary>Stacked aggregation (FLoRA) and the masked sketch update (FSLoRA) on every backend against the Reference.</summary>
public class AggregationTests
{
    public static TheoryData<string, int, int, int> StackedCases()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (o, c, stacked) in new[]
            {
                (0, 7, 4), (7, 0, 4), (7, 17, 0), (1, 1, 1), (7, 17, 33), (17, 33, 7), (129, 33, 17), (33, 129, 1),
                (129, 129, 129), (17, 7, 300), (384, 128, 4 + 16 + 64),
            })
            {
                data.Add(backend, o, c, stacked);
            }
        }
        return data;
    }

    [Theory, MemberData(nameof(StackedCases))]
    public void StackedAggregation_OddShapes_MatchesReference(string backend, int o, int c, int stackedRank)
    {
        using var twin = new Twin(backend);
        var stackedB = twin.Random(o * stackedRank);
        var stackedA = twin.Random(stackedRank * c);
        var weights = twin.RandomValues(stackedRank, 2f);
        var w = twin.Random(o * c);
        twin.Reference.StackedAggregation(o, c, stackedRank, stackedB.Reference, stackedA.Reference, weights, w.Reference);
        twin.Device.StackedAggregation(o, c, stackedRank, stackedB.Device, stackedA.Device, weights, w.Device);
        var tolerance = 2 * MatmulTests.Tolerance(stackedRank);
        twin.AssertClose(w, tolerance, tolerance, $"W ({o},{c}) R={stackedRank}");
    }

    public static TheoryData<string, int, int, int, int> SketchCases()
    {
        var data = new TheoryData<string, int, int, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (c, o, rank, k) in new[]
            {
                (0, 7, 4, 2), (7, 0, 4, 2), (7, 17, 4, 0), (1, 1, 1, 1), (7, 17, 33, 16), (17, 33, 7, 7), (33, 129, 17, 5),
                (129, 7, 33, 33), (128, 384, 16, 8),
            })
            {
                data.Add(backend, c, o, rank, k);
            }
        }
        return data;
    }

    [Theory, MemberData(nameof(SketchCases))]
    public void MaskedSketchUpdate_OddShapes_MatchesReference(string backend, int c, int o, int rank, int k)
    {
        using var twin = new Twin(backend);
        var order = Enumerable.Range(0, rank).ToArray();
        twin.Rng.Shuffle(order);
        var indices = order[..k];
        var subA = twin.Random(k * c);
        var subB = twin.Random(o * k);
        var a = twin.Random(rank * c);
        var b = twin.Random(o * rank);
        const float coefficient = -0.3f;
        twin.Reference.MaskedSketchUpdate(c, o, rank, indices, coefficient, subA.Reference, subB.Reference, a.Reference, b.Reference);
        twin.Device.MaskedSketchUpdate(c, o, rank, indices, coefficient, subA.Device, subB.Device, a.Device, b.Device);
        twin.AssertClose(a, 1e-6f, 1e-6f, $"A ({c},{o}) r={rank} k={k}");
        twin.AssertClose(b, 1e-6f, 1e-6f, $"B ({c},{o}) r={rank} k={k}");
    }
}
