using FedLora.Kernels.Ilgpu;

namespace FedLora.Kernels.Tests.Ilgpu;

/// <summary>
/// The ILGPU GEMM's group shapes, each run on ILGPU's CPU accelerator: side 16 (a GPU's 256-thread groups
/// and 64x64 tiles), 4 and 2, beside the conformance suite's side 1. Every layout (the forward's A B^T, dx's
/// A B, dW's A^T B), bias, accumulation and the gathered rank operands, on shapes that cross the tile in every
/// dimension, with device views inside guarded buffers (a write outside a view fails).
/// </summary>
public class IlgpuGemmTests
{
    private const float Tolerance = 1e-4f;
    private static readonly Dictionary<int, IlgpuBackend> Backends = [];

    public static TheoryData<int, int, int, int> Shapes()
    {
        var data = new TheoryData<int, int, int, int>();
        // Each side's shapes cross its tile (4 x side) in every dimension, and include an empty product.
        foreach (var (n, c, o) in new[] { (70, 66, 65), (1, 129, 7), (7, 0, 17) }) data.Add(16, n, c, o);
        foreach (var (n, c, o) in new[] { (33, 17, 29), (0, 7, 17) }) data.Add(4, n, c, o);
        foreach (var (n, c, o) in new[] { (17, 33, 9), (7, 17, 0) }) data.Add(2, n, c, o);
        return data;
    }

    private static IlgpuBackend WithSide(int side)
    {
        lock (Backends)
        {
            if (!Backends.TryGetValue(side, out var backend))
            {
                backend = IlgpuBackend.Create(IlgpuDevices.CpuSpec);
                backend.GemmSide = side;
                Backends[side] = backend;
            }
            return backend;
        }
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Matmul_GroupSide_MatchesReference(int side, int n, int c, int o)
    {
        using var g = new GuardedTwin(WithSide(side));
        var (x, w, bias, y, dy) = (g.Random(n * c), g.Random(o * c), g.Random(o), g.Random(n * o), g.Random(n * o));
        var (dx, dw, db, dxOverwritten) = (g.Random(n * c), g.Random(o * c), g.Random(o), g.Random(n * c));
        g.Both((b, v) =>
        {
            b.MatmulForward(n, c, o, v(x), v(w), v(bias), v(y));
            b.MatmulBackward(n, c, o, v(dy), v(x), v(w), v(dx), v(dw), v(db));
            b.MatmulBackward(n, c, o, v(dy), v(x), v(w), v(dxOverwritten), null, null, accumulate: false);
        });
        var label = $"side {side} ({n},{c},{o})";
        g.AssertClose(y, Tolerance, Tolerance, $"y {label}");
        g.AssertClose(dx, Tolerance, Tolerance, $"dx {label}");
        g.AssertClose(dw, Tolerance, Tolerance, $"dW {label}");
        g.AssertClose(db, Tolerance, Tolerance, $"dbias {label}");
        g.AssertClose(dxOverwritten, Tolerance, Tolerance, $"dx overwritten {label}");
    }

    [Theory, MemberData(nameof(Shapes))]
    public void LowRankMatmul_GroupSide_MatchesReference(int side, int n, int c, int o)
    {
        const int rank = 9;
        int[] indices = [7, 2, 8, 0, 5];
        using var g = new GuardedTwin(WithSide(side));
        var (x, w, bias, a, bl) = (g.Random(n * c), g.Random(o * c), g.Random(o), g.Random(rank * c), g.Random(o * rank));
        var (t, y, dy) = (g.Random(n * indices.Length), g.Random(n * o), g.Random(n * o));
        var (dx, dw, db, da, dbl) = (g.Random(n * c), g.Random(o * c), g.Random(o), g.Random(rank * c), g.Random(o * rank));
        var (tAll, dxAll, daAll, dblAll) = (g.Random(n * rank), g.Random(n * c), g.Random(rank * c), g.Random(o * rank));
        g.Both((b, v) =>
        {
            b.LowRankMatmulForward(n, c, o, rank, v(x), v(w), v(bias), v(a), v(bl), 0.5f, indices, v(t), v(y));
            b.LowRankMatmulBackward(n, c, o, rank, v(dy), v(x), v(w), v(a), v(bl), 0.5f, indices, v(t), v(dx), v(dw), v(db), v(da), v(dbl));
            b.LowRankMatmulForward(n, c, o, rank, v(x), v(w), null, v(a), v(bl), 1.5f, null, v(tAll), v(y));
            b.LowRankMatmulBackward(n, c, o, rank, v(dy), v(x), v(w), v(a), v(bl), 1.5f, null, v(tAll), v(dxAll), null, null, v(daAll), v(dblAll),
                accumulate: false);
        });
        var label = $"side {side} ({n},{c},{o})";
        foreach (var (tensor, name) in new[] { (t, "t"), (tAll, "t all ranks"), (y, "y"), (dx, "dx"), (dw, "dW"), (db, "dbias"), (da, "dA"),
            (dbl, "dB"), (dxAll, "dx all ranks"), (daAll, "dA all ranks"), (dblAll, "dB all ranks") })
        {
            g.AssertClose(tensor, 4 * Tolerance, 4 * Tolerance, $"{name} {label}");
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(32)]
    [InlineData(0)]
    public void GemmSide_NotAPowerOfTwoUpTo16_IsRefused(int side)
    {
        var backend = WithSide(16);
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.GemmSide = side);
        Assert.Equal(16, backend.GemmSide);
    }
}
