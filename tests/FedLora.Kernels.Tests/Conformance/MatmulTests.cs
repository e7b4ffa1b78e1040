namespace FedLora.Kernels.Tests.Conformance;

/// <summary>
/// Matmul forward and backward on every backend against the Reference, on odd shapes drawn from
/// {0, 1, 7, 17, 33, 129} (every edge-tile remainder of every micro-kernel), shapes that cross the
/// GEMM's K blocking (K > 256) and its column chunking, and one shape of the model.
/// </summary>
public class MatmulTests
{
    /// <summary>
    /// (N, C, O): each odd size in each position, zeros included; K past one K block (300); K past one
    /// group of K blocks on 128-row tiles (forward 1024x600, dW 1024x600); the model's qkv shape; a K stride
    /// of dy^T long enough to be packed (O = 2049).
    /// </summary>
    internal static readonly (int N, int C, int O)[] Shapes =
    [
        (0, 7, 17), (7, 0, 17), (7, 17, 0), (1, 1, 1), (1, 7, 17), (7, 1, 33), (17, 33, 1), (33, 17, 7),
        (129, 7, 33), (7, 129, 17), (17, 33, 129), (33, 129, 129), (129, 129, 7), (129, 33, 17), (1, 129, 129),
        (129, 1, 129), (17, 300, 33), (300, 33, 17), (1024, 600, 33), (600, 17, 1024), (128, 128, 384),
        (300, 17, 2049),
        // dy rows 4 KB apart, and x wide enough that the Cpu dW packs dy^T rather than read it in place.
        (33, 300, 1024),
        // K so long (9000) that the Cpu GEMM's packed b would hold under 8 micro-panels, with more columns
        // (300) than that: K runs in slices, each adding onto the output (the LM head's dx at V = 50,257).
        (9, 300, 9000), (9, 9000, 300),
    ];

    public static TheoryData<string, int, int, int, bool> ForwardCases()
    {
        var data = new TheoryData<string, int, int, int, bool>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (n, c, o) in Shapes.Where(s => TestBackends.Sweeps(backend, (long)s.N * s.C * s.O)))
            {
                data.Add(backend, n, c, o, true);
                data.Add(backend, n, c, o, false);
            }
        }
        return data;
    }

    /// <summary>Which gradients are requested: bit 0 inputGrad, bit 1 weightGrad, bit 2 biasGrad.</summary>
    public static TheoryData<string, int, int, int, int> BackwardCases()
    {
        var data = new TheoryData<string, int, int, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (n, c, o) in Shapes.Where(s => TestBackends.Sweeps(backend, (long)s.N * s.C * s.O)))
            {
                data.Add(backend, n, c, o, 0b111);
            }
            foreach (var grads in new[] { 0b001, 0b010, 0b100, 0b110, 0b000 })
            {
                data.Add(backend, 33, 17, 129, grads);
                data.Add(backend, 129, 33, 7, grads);
            }
        }
        return data;
    }

    /// <summary>abs = rel tolerance for a float32 sum of K products of values in [-1, 1].</summary>
    internal static float Tolerance(int k) => 1e-4f * MathF.Sqrt(k + 1);

    [Theory, MemberData(nameof(ForwardCases))]
    public void MatmulForward_OddShapes_MatchesReference(string backend, int n, int c, int o, bool withBias)
    {
        using var twin = new Twin(backend);
        var x = twin.Random(n * c);
        var w = twin.Random(o * c);
        var bias = withBias ? twin.Random(o) : null;
        var y = twin.Random(n * o);
        twin.Reference.MatmulForward(n, c, o, x.Reference, w.Reference, bias?.Reference, y.Reference);
        twin.Device.MatmulForward(n, c, o, x.Device, w.Device, bias?.Device, y.Device);
        twin.AssertClose(y, Tolerance(c), Tolerance(c), $"y ({n},{c},{o}) bias={withBias}");
    }

    public static TheoryData<string, int, int, int> OverwriteCases()
    {
        var data = new TheoryData<string, int, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var (n, c, o) in Shapes.Where(s => TestBackends.Sweeps(backend, (long)s.N * s.C * s.O))) data.Add(backend, n, c, o);
        }
        return data;
    }

    [Theory, MemberData(nameof(BackwardCases))]
    public void MatmulBackward_OddShapes_MatchesReference(string backend, int n, int c, int o, int grads) =>
        Backward(backend, n, c, o, grads, accumulate: true);

    // dx starts as NaN and must be written, not added to (dW and dbias still accumulate).
    [Theory, MemberData(nameof(OverwriteCases))]
    public void MatmulBackward_OverwritingNaNs_MatchesReference(string backend, int n, int c, int o) =>
        Backward(backend, n, c, o, 0b111, accumulate: false);

    private static void Backward(string backend, int n, int c, int o, int grads, bool accumulate)
    {
        using var twin = new Twin(backend);
        var dy = twin.Random(n * o);
        var x = twin.Random(n * c);
        var w = twin.Random(o * c);
        var dx = (grads & 1) == 0 ? null : accumulate ? twin.Random(n * c) : twin.NaNs(n * c);
        var dw = (grads & 2) != 0 ? twin.Random(o * c) : null;
        var db = (grads & 4) != 0 ? twin.Random(o) : null;
        twin.Reference.MatmulBackward(n, c, o, dy.Reference, x.Reference, w.Reference, dx?.Reference, dw?.Reference, db?.Reference, accumulate);
        twin.Device.MatmulBackward(n, c, o, dy.Device, x.Device, w.Device, dx?.Device, dw?.Device, db?.Device, accumulate);
        if (dx is not null) twin.AssertClose(dx, Tolerance(o), Tolerance(o), $"dx ({n},{c},{o})");
        if (dw is not null) twin.AssertClose(dw, Tolerance(n), Tolerance(n), $"dW ({n},{c},{o})");
        if (db is not null) twin.AssertClose(db, Tolerance(n), Tolerance(n), $"dbias ({n},{c},{o})");
    }

    // K x columns past the GEMM's packed-b budget (2^21 floats) splits the columns in chunks; the
    // bias gradient, folded into the first chunk's packing, must still be counted once.
    [Theory, MemberData(nameof(TestBackends.ForProduct), 2049L * 1040 * 7, MemberType = typeof(TestBackends))]
    public void MatmulBackward_ManyColumnsLongK_MatchesReference(string backend)
    {
        const int n = 2049, c = 1040, o = 7;
        using var twin = new Twin(backend);
        var dy = twin.Random(n * o);
        var x = twin.Random(n * c);
        var w = twin.Random(o * c);
        var dx = twin.Random(n * c);
        var dw = twin.Random(o * c);
        var db = twin.Random(o);
        twin.Reference.MatmulBackward(n, c, o, dy.Reference, x.Reference, w.Reference, dx.Reference, dw.Reference, db.Reference);
        twin.Device.MatmulBackward(n, c, o, dy.Device, x.Device, w.Device, dx.Device, dw.Device, db.Device);
        twin.AssertClose(dx, Tolerance(o), Tolerance(o), "dx");
        twin.AssertClose(dw, Tolerance(n), Tolerance(n), "dW");
        twin.AssertClose(db, Tolerance(n), Tolerance(n), "dbias");
    }

    // The model keeps every tensor in one buffer (llm.c's layout) and hands ops views at offsets
    // that break vector alignment: here every operand sits at an odd offset of a shared buffer.
    [Theory, MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void MatmulAndLowRank_ViewsAtOddOffsets_MatchReference(string backend)
    {
        const int n = 67, c = 45, o = 83, rank = 9;
        int[] indices = [4, 1, 7];
        int[] lengths = [n * c, o * c, o, n * o, n * o, n * c, o * c, o, rank * c, o * rank, n * 3, rank * c, o * rank];
        using var twin = new Twin(backend);
        var all = twin.Random(lengths.Sum() + 3 * lengths.Length);
        var views = new TwinTensor[lengths.Length];
        for (int i = 0, offset = 3; i < lengths.Length; offset += lengths[i] + 3, i++)
        {
            views[i] = new TwinTensor(all.Reference.Slice(offset, lengths[i]), all.Device.Slice(offset, lengths[i]));
        }
        var (x, w, bias, y, dy, dx, dw, db, a, b, t, da, dbl) =
            (views[0], views[1], views[2], views[3], views[4], views[5], views[6], views[7], views[8], views[9], views[10], views[11], views[12]);
        foreach (var (side, pick) in new (Backend, Func<TwinTensor, BufferView>)[] { (twin.Reference, v => v.Reference), (twin.Device, v => v.Device) })
        {
            side.MatmulForward(n, c, o, pick(x), pick(w), pick(bias), pick(y));
            side.MatmulBackward(n, c, o, pick(dy), pick(x), pick(w), pick(dx), pick(dw), pick(db));
            side.LowRankMatmulForward(n, c, o, rank, pick(x), pick(w), pick(bias), pick(a), pick(b), 0.5f, indices, pick(t), pick(dy));
            side.LowRankMatmulBackward(n, c, o, rank, pick(y), pick(x), pick(w), pick(a), pick(b), 0.5f, indices, pick(t),
                pick(dx), pick(dw), pick(db), pick(da), pick(dbl));
        }
        var tolerance = 4 * Tolerance(n + o);
        twin.AssertClose(all, tolerance, tolerance, "every view of the shared buffer");
    }

    [Theory, MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void MatmulForward_RepeatedRuns_AreBitwiseIdentical(string backend)
    {
        const int n = 257, c = 300, o = 129;
        using var twin = new Twin(backend);
        var x = twin.Random(n * c);
        var w = twin.Random(o * c);
        var bias = twin.Random(o);
        var y = twin.Zeros(n * o);
        twin.Device.MatmulForward(n, c, o, x.Device, w.Device, bias.Device, y.Device);
        var first = twin.Device.ToArray(y.Device);
        for (var run = 0; run < 5; run++)
        {
            twin.Device.MatmulForward(n, c, o, x.Device, w.Device, bias.Device, y.Device);
            Twin.AssertClose(first, twin.Device.ToArray(y.Device), 0, 0, $"{backend}: run {run + 2} against run 1");
        }
    }
}

/// <summary>Properties of the Cpu backend's GEMM family beyond agreeing with the Reference.</summary>
public class GemmEngineTests
{
    // Once the per-thread packing buffers exist, the matmul family allocates nothing: a training
    // step calls these ops thousands of times.
    [Fact]
    public void MatmulFamily_WarmCalls_AllocateNothing()
    {
        const int n = 300, c = 129, o = 257, rank = 16;
        using var twin = new Twin("cpu");
        var cpu = twin.Device;
        var (x, w, bias, y, dy) = (twin.Random(n * c).Device, twin.Random(o * c).Device, twin.Random(o).Device, twin.Zeros(n * o).Device, twin.Random(n * o).Device);
        var (dx, dw, db) = (twin.Zeros(n * c).Device, twin.Zeros(o * c).Device, twin.Zeros(o).Device);
        var (a, b, t, da, dbl) = (twin.Random(rank * c).Device, twin.Random(o * rank).Device, twin.Zeros(n * 7).Device, twin.Zeros(rank * c).Device, twin.Zeros(o * rank).Device);
        int[] indices = [9, 2, 14, 0, 5, 11, 3];
        void Step()
        {
            cpu.MatmulForward(n, c, o, x, w, bias, y);
            cpu.MatmulBackward(n, c, o, dy, x, w, dx, dw, db);
            cpu.LowRankMatmulForward(n, c, o, rank, x, w, bias, a, b, 0.5f, indices, t, y);
            cpu.LowRankMatmulBackward(n, c, o, rank, dy, x, w, a, b, 0.5f, indices, t, dx, dw, db, da, dbl);
        }
        Step();
        var before = GC.GetAllocatedBytesForCurrentThread();
        Step();
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }
}
