namespace FedLora.Kernels.Tests.Conformance;

/// <summary>
/// LoRA matmul forward and backward on every backend against the Reference: all ranks (I = null),
/// an index set in non-sorted order with k &lt; r, and a full permutation of the ranks, on odd shapes,
/// on the model's qkv shape and on rows 4 KB apart.
/// </summary>
public class LowRankMatmulTests
{
    internal static readonly (int N, int C, int O, int Rank)[] Shapes =
    [
        (0, 7, 17, 4), (7, 0, 17, 4), (7, 17, 0, 4), (1, 1, 1, 1), (7, 17, 33, 1), (17, 33, 7, 7), (33, 129, 17, 16),
        (129, 17, 33, 17), (17, 129, 129, 33), (129, 33, 129, 4), (300, 33, 17, 7), (17, 300, 33, 16), (1024, 600, 33, 16),
        (128, 128, 384, 16), (300, 17, 2049, 16),
        // Rows of x or dy 4 KB apart (the Cpu GEMM's 8-row narrow kernel), with a K tail in dx at C = 16.
        (37, 1024, 17, 16), (37, 16, 1024, 4),
    ];

    /// <summary>How ranks are selected: null (all r), a shuffled subset of about r/2, a shuffled full permutation.</summary>
    public enum Ranks
    {
        All,
        ShuffledSubset,
        Permutation,
    }

    public static TheoryData<string, int, int, int, int, Ranks> Cases()
    {
        var data = new TheoryData<string, int, int, int, int, Ranks>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (n, c, o, rank) in Shapes.Where(s => TestBackends.Sweeps(backend, (long)s.N * s.C * s.O)))
            {
                foreach (var ranks in Enum.GetValues<Ranks>()) data.Add(backend, n, c, o, rank, ranks);
            }
        }
        return data;
    }

    /// <summary>Which gradients are requested: bit 0 dx, 1 dW, 2 dbias, 3 dA, 4 dB.</summary>
    public static TheoryData<string, int> GradientSubsets()
    {
        var data = new TheoryData<string, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var grads in new[] { 0b11000, 0b01000, 0b10000, 0b00001, 0b00110, 0b01001, 0b00000 }) data.Add(backend, grads);
        }
        return data;
    }

    internal static int[]? Indices(Ranks ranks, int rank, Random rng)
    {
        if (ranks == Ranks.All) return null;
        var order = Enumerable.Range(0, rank).ToArray();
        rng.Shuffle(order);
        if (ranks == Ranks.Permutation) return order;
        var subset = order[..Math.Max(1, rank / 2)];
        // Guarantee a non-sorted order whenever there are two indices to disorder.
        if (subset.Length > 1 && subset[0] < subset[1]) (subset[0], subset[1]) = (subset[1], subset[0]);
        return subset;
    }

    [Theory, MemberData(nameof(Cases))]
    public void LowRankMatmulForward_OddShapes_MatchesReference(string backend, int n, int c, int o, int rank, Ranks ranks)
    {
        using var twin = new Twin(backend);
        var indices = Indices(ranks, rank, twin.Rng);
        var k = indices?.Length ?? rank;
        var x = twin.Random(n * c);
        var w = twin.Random(o * c);
        var bias = twin.Random(o);
        var a = twin.Random(rank * c);
        var b = twin.Random(o * rank);
        var t = twin.Random(n * k);
        var y = twin.Random(n * o);
        const float scale = 0.75f;
        twin.Reference.LowRankMatmulForward(n, c, o, rank, x.Reference, w.Reference, bias.Reference, a.Reference, b.Reference, scale, indices, t.Reference, y.Reference);
        twin.Device.LowRankMatmulForward(n, c, o, rank, x.Device, w.Device, bias.Device, a.Device, b.Device, scale, indices, t.Device, y.Device);
        var tolerance = MatmulTests.Tolerance(c) * MathF.Sqrt(k + 1);
        twin.AssertClose(t, MatmulTests.Tolerance(c), MatmulTests.Tolerance(c), $"t ({n},{c},{o}) r={rank} {ranks}");
        twin.AssertClose(y, tolerance, MatmulTests.Tolerance(c + k), $"y ({n},{c},{o}) r={rank} {ranks}");
    }

    [Theory, MemberData(nameof(Cases))]
    public void LowRankMatmulBackward_OddShapes_MatchesReference(string backend, int n, int c, int o, int rank, Ranks ranks) =>
        Backward(backend, n, c, o, rank, ranks, 0b11111);

    // dx starts as NaN and must be written, not added to (dW, dbias, dA and dB still accumulate).
    [Theory, MemberData(nameof(Cases))]
    public void LowRankMatmulBackward_OverwritingNaNs_MatchesReference(string backend, int n, int c, int o, int rank, Ranks ranks) =>
        Backward(backend, n, c, o, rank, ranks, 0b11111, accumulate: false);

    [Theory, MemberData(nameof(GradientSubsets))]
    public void LowRankMatmulBackward_SomeGradientsNull_MatchesReference(string backend, int grads) =>
        Backward(backend, 33, 17, 129, 7, Ranks.ShuffledSubset, grads);

    private static void Backward(string backend, int n, int c, int o, int rank, Ranks ranks, int grads, bool accumulate = true)
    {
        using var twin = new Twin(backend);
        var indices = Indices(ranks, rank, twin.Rng);
        var k = indices?.Length ?? rank;
        var dy = twin.Random(n * o);
        var x = twin.Random(n * c);
        var w = twin.Random(o * c);
        var a = twin.Random(rank * c);
        var b = twin.Random(o * rank);
        var t = twin.Random(n * k);
        var dx = (grads & 1) == 0 ? null : accumulate ? twin.Random(n * c) : twin.NaNs(n * c);
        var dw = (grads & 2) != 0 ? twin.Random(o * c) : null;
        var db = (grads & 4) != 0 ? twin.Random(o) : null;
        var da = (grads & 8) != 0 ? twin.Random(rank * c) : null;
        var dbl = (grads & 16) != 0 ? twin.Random(o * rank) : null;
        const float scale = 1.5f;
        twin.Reference.LowRankMatmulBackward(n, c, o, rank, dy.Reference, x.Reference, w.Reference, a.Reference, b.Reference, scale, indices,
            t.Reference, dx?.Reference, dw?.Reference, db?.Reference, da?.Reference, dbl?.Reference, accumulate);
        twin.Device.LowRankMatmulBackward(n, c, o, rank, dy.Device, x.Device, w.Device, a.Device, b.Device, scale, indices,
            t.Device, dx?.Device, dw?.Device, db?.Device, da?.Device, dbl?.Device, accumulate);
        var label = $"({n},{c},{o}) r={rank} {ranks}";
        // dA sums N products of u = dy B_I, itself a sum of O products.
        if (dx is not null) twin.AssertClose(dx, MatmulTests.Tolerance(o) * MathF.Sqrt(k + 1), MatmulTests.Tolerance(o + k), $"dx {label}");
        if (dw is not null) twin.AssertClose(dw, MatmulTests.Tolerance(n), MatmulTests.Tolerance(n), $"dW {label}");
        if (db is not null) twin.AssertClose(db, MatmulTests.Tolerance(n), MatmulTests.Tolerance(n), $"dbias {label}");
        if (da is not null) twin.AssertClose(da, MatmulTests.Tolerance(n) * MathF.Sqrt(o + 1), MatmulTests.Tolerance(n), $"dA {label}");
        if (dbl is not null) twin.AssertClose(dbl, MatmulTests.Tolerance(n), MatmulTests.Tolerance(n), $"dB {label}");
    }
}
