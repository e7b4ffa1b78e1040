using System.Globalization;

namespace FedLora.Kernels.OpenCl;

// Matmul, low-rank (LoRA) matmul, masked sketch update and stacked aggregation (Matmul.cl, and the
// GEMM templates MatmulGemm.cl for GPUs and MatmulGemmVector.cl for CPU devices). Every product is one of three dense GEMM layouts:
//   gemm_nt  C = A B^T   A (M,K), B stored (N,K)   forward: inp W^T, inp A_I^T, t B_I^T
//   gemm_nn  C = A B     A (M,K), B stored (K,N)   dinp = dout W, u = dout B_I, dinp += u A_I, W += B_stack A_stack
//   gemm_tn  C = A^T B   A stored (K,M), B (K,N)   dW = dout^T inp, dB_I = dout^T t, dA_I = u^T inp
// On CPU devices the GEMM is a register-blocked vector kernel instead (GemmKernel.Vector).
// A rank-index set I is reduced to dense operands by gathering A_I (k,C) and B_I (O,k) into scratch,
// and gradients for I are computed densely and scattered back (scatter_add_rows / _columns).
//
// Low-rank forward: out = inp W^T + bias, t = inp A_I^T, then out += s t B_I^T as a second,
// accumulating GEMM pass over K = k. Two passes instead of one GEMM over the concatenated K = C + k
// ([inp | s t] times [W | B_I]^T): the extra pass re-reads out once (N*O floats) against the
// 2*N*O*C flops of the base product, and keeps the GEMM kernel free of segment logic.
public sealed partial class OpenClBackend
{
    /// <summary>Outputs per work-item per side in the tiled GEMM: 4 x 4 accumulators.</summary>
    private const int GemmOutputsPerItem = 4;

    private const int GemmBias = 1;
    private const int GemmAccumulate = 2;

    /// <summary>Rows of C per work-item in the CPU GEMM (with 2 vectors of columns: the 6x32 micro-kernel at 16 lanes).</summary>
    private const int VectorGemmRows = 6;

    /// <summary>
    /// K-slab depth of the CPU GEMM: a group's panel of B is 256 x 32 floats = 32 KiB. At N=2048, C=O=768
    /// on PoCL (best of 30, shared machine), dW = dout^T inp without slabs ran at 100 GFLOP/s (median 61),
    /// with 256-deep slabs at 210 (median 154).
    /// </summary>
    private const int VectorGemmDepth = 256;

    /// <summary>Rows of B one work-item of stage_b copies (STAGE_ROWS in Matmul.cl).</summary>
    private const int StageRows = 16;

    /// <summary>Work-items per work-group (along C's rows) in the CPU GEMM.</summary>
    private const int VectorGemmGroup = 4;

    private MatmulKernels? _matmul;

    /// <summary>The Matmul family's kernels, built on first use (every GEMM goes through here).</summary>
    private MatmulKernels Matmul => _matmul ??= BuildMatmul();

    private string GemmDescription
    {
        get
        {
            if (Tuning.Gemm == GemmKernel.Vector)
            {
                return string.Create(CultureInfo.InvariantCulture,
                    $"register-blocked GEMM: {VectorGemmRows}x{2 * VectorWidth} blocks per work-item, float{VectorWidth} vectors");
            }
            var side = _matmul?.Side ?? PlannedGemmSide(Math.Min(Device.MaxWorkGroupSize, Tuning.MaxTiledGemmSide * Tuning.MaxTiledGemmSide));
            var tile = side * GemmOutputsPerItem;
            return string.Create(CultureInfo.InvariantCulture,
                $"tiled GEMM: {tile}x{tile} tiles in local memory, {side}x{side} work-items of {GemmOutputsPerItem}x{GemmOutputsPerItem} outputs");
        }
    }

    /// <summary>The CPU GEMM's vector width: the device's preferred float width, as 4, 8 or 16.</summary>
    private int VectorWidth => _preferredFloatWidth >= 16 ? 16 : _preferredFloatWidth >= 8 ? 8 : 4;

    /// <inheritdoc/>
    protected override void MatmulForwardCore(int n, int c, int o, BufferView input, BufferView weight, BufferView? bias, BufferView output)
    {
        lock (_gate) Gemm(GemmLayout.Nt, n, o, c, 1f, input, c, weight, c, output, o, Optional(bias), bias is null ? 0 : GemmBias);
    }

    /// <inheritdoc/>
    protected override void MatmulBackwardCore(int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        lock (_gate) DenseBackward(Matmul, n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
    }

    /// <inheritdoc/>
    protected override void LowRankMatmulForwardCore(int n, int c, int o, int rank, BufferView input, BufferView weight, BufferView? bias,
        BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden, BufferView output)
    {
        lock (_gate)
        {
            var kernels = Matmul;
            Gemm(GemmLayout.Nt, n, o, c, 1f, input, c, weight, c, output, o, Optional(bias), bias is null ? 0 : GemmBias);
            var k = rankIndices?.Length ?? rank;
            if (k == 0) return;
            var (aI, bI, ldbI) = ActiveRanks(kernels, c, o, rank, loraA, loraB, rankIndices, extraScratch: 0);
            // t = inp A_I^T (N,k), then out += s t B_I^T.
            Gemm(GemmLayout.Nt, n, k, c, 1f, input, c, aI, c, loraHidden, k, Placeholder, 0);
            Gemm(GemmLayout.Nt, n, o, k, scale, loraHidden, k, bI, ldbI, output, o, Placeholder, GemmAccumulate);
        }
    }

    /// <inheritdoc/>
    protected override void LowRankMatmulBackwardCore(int n, int c, int o, int rank, BufferView outputGrad, BufferView input,
        BufferView weight, BufferView loraA, BufferView loraB, float scale, int[]? rankIndices, BufferView loraHidden,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, BufferView? loraAGrad, BufferView? loraBGrad, bool accumulate)
    {
        lock (_gate)
        {
            var kernels = Matmul;
            // The dense dx GEMM writes or adds as asked; the adapter's term is then added to it.
            DenseBackward(kernels, n, c, o, outputGrad, input, weight, inputGrad, weightGrad, biasGrad, accumulate);
            var k = rankIndices?.Length ?? rank;
            if (k == 0 || (inputGrad is null && loraAGrad is null && loraBGrad is null)) return;

            // Scratch after the gathered A_I and B_I: u (N,k), then dA_I (k,C) and dB_I (O,k) when I is given.
            var gathered = rankIndices is null ? 0 : k * c + o * k;
            var uOffset = gathered;
            var dAOffset = uOffset + n * k;
            var dBOffset = dAOffset + (rankIndices is null ? 0 : k * c);
            var extra = n * k + (rankIndices is null ? 0 : k * c + o * k);
            var (aI, bI, ldbI) = ActiveRanks(kernels, c, o, rank, loraA, loraB, rankIndices, extra);
            var scratch = _floatScratch.Handle;
            var indices = KernelArg.Memory(_intScratch.Handle, 0);

            if (loraBGrad is { } dB)
            {
                // dB_I += s dout^T t.
                if (rankIndices is null)
                {
                    Gemm(GemmLayout.Tn, o, k, n, scale, outputGrad, o, loraHidden, k, dB, rank, Placeholder, GemmAccumulate);
                }
                else
                {
                    Gemm(GemmLayout.Tn, o, k, n, scale, outputGrad, o, loraHidden, k, KernelArg.Memory(scratch, dBOffset), k, Placeholder, 0);
                    Run(kernels.ScatterAddColumns, o * k, o, rank, k, 1f, KernelArg.Memory(scratch, dBOffset), indices, dB);
                }
            }
            if (loraAGrad is null && inputGrad is null) return;

            // u = dout B_I (N,k).
            var u = KernelArg.Memory(scratch, uOffset);
            Gemm(GemmLayout.Nn, n, k, o, 1f, outputGrad, o, bI, ldbI, u, k, Placeholder, 0);
            if (loraAGrad is { } dA)
            {
                // dA_I += s u^T inp.
                if (rankIndices is null)
                {
                    Gemm(GemmLayout.Tn, k, c, n, scale, u, k, input, c, dA, c, Placeholder, GemmAccumulate);
                }
                else
                {
                    Gemm(GemmLayout.Tn, k, c, n, scale, u, k, input, c, KernelArg.Memory(scratch, dAOffset), c, Placeholder, 0);
                    Run(kernels.ScatterAddRows, k * c, k, c, 1f, KernelArg.Memory(scratch, dAOffset), indices, dA);
                }
            }
            if (inputGrad is { } dx)
            {
                // dinp += s u A_I.
                Gemm(GemmLayout.Nn, n, c, k, scale, u, k, aI, c, dx, c, Placeholder, GemmAccumulate);
            }
        }
    }

    /// <inheritdoc/>
    protected override void MaskedSketchUpdateCore(int c, int o, int rank, int[] rankIndices, float coefficient,
        BufferView subA, BufferView subB, BufferView loraA, BufferView loraB)
    {
        var k = rankIndices.Length;
        if (k == 0) return;
        lock (_gate)
        {
            var kernels = Matmul;
            var indices = UploadInts(rankIndices);
            Run(kernels.ScatterAddRows, k * c, k, c, coefficient, subA, indices, loraA);
            Run(kernels.ScatterAddColumns, o * k, o, rank, k, coefficient, subB, indices, loraB);
        }
    }

    /// <inheritdoc/>
    protected override void StackedAggregationCore(int o, int c, int stackedRank, BufferView stackedB, BufferView stackedA,
        ReadOnlySpan<float> rowWeights, BufferView weight)
    {
        if (stackedRank == 0) return;
        lock (_gate)
        {
            var kernels = Matmul;
            // W += B_stack (diag(w) A_stack): the row weights scale A_stack's rows in scratch first.
            var scratch = _floatScratch.Reserve(stackedRank + (long)stackedRank * c);
            UploadFloats(rowWeights, 0);
            var scaledA = KernelArg.Memory(scratch, stackedRank);
            Run(kernels.ScaleRows, stackedRank * c, stackedRank, c, KernelArg.Memory(scratch, 0), stackedA, scaledA);
            Gemm(GemmLayout.Nn, o, c, stackedRank, 1f, stackedB, stackedRank, scaledA, c, weight, c, Placeholder, GemmAccumulate);
        }
    }

    /// <summary>
    /// inputGrad += dout W (= when not accumulating); weightGrad += dout^T inp; biasGrad += colsum(dout),
    /// each when present.
    /// </summary>
    private void DenseBackward(MatmulKernels kernels, int n, int c, int o, BufferView outputGrad, BufferView input, BufferView weight,
        BufferView? inputGrad, BufferView? weightGrad, BufferView? biasGrad, bool accumulate)
    {
        if (inputGrad is { } dx) Gemm(GemmLayout.Nn, n, c, o, 1f, outputGrad, o, weight, c, dx, c, Placeholder, accumulate ? GemmAccumulate : 0);
        if (weightGrad is { } dw) Gemm(GemmLayout.Tn, o, c, n, 1f, outputGrad, o, input, c, dw, c, Placeholder, GemmAccumulate);
        if (biasGrad is { } db) Run(kernels.ColumnSumAccumulate, o, n, o, outputGrad, db);
    }

    /// <summary>
    /// The dense operands of the active ranks: A_I (k,C) with row stride C and B_I (O,k) with row stride
    /// ldb. Without an index set they are A and B themselves (ldb = r); with one, they are gathered into
    /// the float scratch (A_I at 0, B_I at k C), which is reserved with <paramref name="extraScratch"/>
    /// more floats for the caller, and the indices are left in the int scratch at 0.
    /// </summary>
    private (KernelArg A, KernelArg B, int Ldb) ActiveRanks(MatmulKernels kernels, int c, int o, int rank,
        BufferView loraA, BufferView loraB, int[]? rankIndices, int extraScratch)
    {
        if (rankIndices is null)
        {
            _floatScratch.Reserve(extraScratch);
            return (loraA, loraB, rank);
        }
        var k = rankIndices.Length;
        var scratch = _floatScratch.Reserve((long)k * c + (long)o * k + extraScratch);
        var indices = UploadInts(rankIndices);
        var aI = KernelArg.Memory(scratch, 0);
        var bI = KernelArg.Memory(scratch, k * c);
        Run(kernels.GatherRows, k * c, k, c, loraA, indices, aI);
        Run(kernels.GatherColumns, o * k, o, rank, k, loraB, indices, bI);
        return (aI, bI, k);
    }

    /// <summary>
    /// C = alpha op(A) op(B) (+ bias if flags has GemmBias) (+ C if flags has GemmAccumulate), C (M,N)
    /// with row stride ldc, A and B as <paramref name="layout"/> says; <paramref name="batch"/> repeats the
    /// product over strided operands (attention's heads), one product by default.
    /// </summary>
    private unsafe void Gemm(GemmLayout layout, int m, int n, int k, float alpha, KernelArg a, int lda, KernelArg b, int ldb,
        KernelArg c, int ldc, KernelArg bias, int flags, GemmBatch? batch = null)
    {
        var products = batch ?? GemmBatch.One;
        if (m == 0 || n == 0 || products.Count == 0) return;
        var kernels = Matmul;
        if (kernels.Variant == GemmKernel.Tiled)
        {
            var kernel = layout switch { GemmLayout.Nt => kernels.Nt!, GemmLayout.Nn => kernels.Nn!, _ => kernels.Tn! };
            var side = (nuint)kernels.Side;
            var tile = side * GemmOutputsPerItem;
            var global = stackalloc nuint[] { ((nuint)n + tile - 1) / tile * side, ((nuint)m + tile - 1) / tile * side, (nuint)products.Count };
            var local = stackalloc nuint[] { side, side, 1 };
            Enqueue(kernel, 3, global, local, [m, n, k, alpha, a, lda, b, ldb, c, ldc, bias, flags,
                products.Inner, products.AOuter, products.AInner, products.BOuter, products.BInner, products.COuter, products.CInner]);
            return;
        }
        var blockColumns = 2 * kernels.Width;
        var paddedColumns = (n + blockColumns - 1) / blockColumns * blockColumns;
        var (bOuter, bInner) = (products.BOuter, products.BInner);
        if (layout == GemmLayout.Nt || paddedColumns != n)
        {
            // The CPU kernel reads whole vectors of B's rows, as (K,N): B^T, or B with its columns padded to
            // whole blocks, goes to the GEMM's own scratch (callers hold the float scratch), product after product.
            var size = k * paddedColumns;
            var staged = _gemmScratch.Reserve((long)size * products.Count);
            var stage = kernels.StageB!;
            var stageGroup = (nuint)stage.PowerOfTwoGroup(64);
            var ranges = stackalloc nuint[] { ((nuint)paddedColumns + stageGroup - 1) / stageGroup * stageGroup, ((nuint)k + StageRows - 1) / StageRows, (nuint)products.Count };
            var groups = stackalloc nuint[] { stageGroup, 1, 1 };
            if (k > 0)
            {
                Enqueue(stage, 3, ranges, groups, [k, n, paddedColumns, layout == GemmLayout.Nt ? 1 : 0, b, ldb,
                    KernelArg.Memory(staged, 0), products.Inner, products.BOuter, products.BInner]);
            }
            b = KernelArg.Memory(staged, 0);
            ldb = paddedColumns;
            (bOuter, bInner) = (products.Inner * size, size);
        }
        var vector = layout == GemmLayout.Tn ? kernels.VectorT! : kernels.VectorN!;
        // Work-items of a group share a column block: they stream the same panel of B.
        var group = (nuint)Math.Min(VectorGemmGroup, vector.MaxWorkGroupSize);
        var rowBlocks = ((nuint)m + VectorGemmRows - 1) / VectorGemmRows;
        var sizes = stackalloc nuint[] { (nuint)(paddedColumns / blockColumns), (rowBlocks + group - 1) / group * group, (nuint)products.Count };
        var groupSizes = stackalloc nuint[] { 1, group, 1 };
        // A long product runs as K-slabs, each accumulating onto the one before, so that the panel of B a
        // group streams (depth x 2VW floats) stays in cache across the group's work-items.
        for (var k0 = 0; k0 == 0 || k0 < k; k0 += VectorGemmDepth)
        {
            var depth = Math.Min(VectorGemmDepth, k - k0);
            var slabFlags = k0 == 0 ? flags : (flags & ~GemmBias) | GemmAccumulate;
            Enqueue(vector, 3, sizes, groupSizes, [m, n, depth, alpha, a.Advance(layout == GemmLayout.Tn ? k0 * lda : k0), lda,
                b.Advance(k0 * ldb), ldb, c, ldc, bias, slabFlags,
                products.Inner, products.AOuter, products.AInner, bOuter, bInner, products.COuter, products.CInner]);
        }
    }

    /// <summary>
    /// Count products of one shape whose operands sit at strided offsets: product z = q Inner + r
    /// (0 &lt;= r &lt; Inner) reads A from q AOuter + r AInner past A's offset, and likewise B and C.
    /// Attention's heads: q is the batch row b, r the head h.
    /// </summary>
    private readonly record struct GemmBatch(int Count, int Inner, int AOuter, int AInner, int BOuter, int BInner, int COuter, int CInner)
    {
        public static GemmBatch One => new(1, 1, 0, 0, 0, 0, 0, 0);
    }

    /// <summary>The largest GEMM work-group side (a power of two up to 16) whose square the device runs.</summary>
    private static int PlannedGemmSide(int maxWorkGroupSize)
    {
        var side = 16;
        while (side > 1 && side * side > maxWorkGroupSize) side /= 2;
        return side;
    }

    /// <summary>
    /// Builds the Matmul program: the GEMM template instantiated for each layout it serves, then the
    /// helpers, in one program so that one build serves all. The tiled GEMM takes the largest work-group
    /// the device and the compiled kernels accept.
    /// </summary>
    private MatmulKernels BuildMatmul()
    {
        var helpers = OpenClProgram.Source("Matmul");
        if (Tuning.Gemm == GemmKernel.Vector)
        {
            var vectorTemplate = OpenClProgram.Source("MatmulGemmVector");
            var options = string.Create(CultureInfo.InvariantCulture, $"-D VW={VectorWidth} -D RB={VectorGemmRows}");
            var program = BuildProgram("Matmul", options,
                Instance(vectorTemplate, "gemm_vector_n", 0, 0), Instance(vectorTemplate, "gemm_vector_t", 1, 0), helpers);
            return new MatmulKernels(program, GemmKernel.Vector, 0, VectorWidth);
        }
        var template = OpenClProgram.Source("MatmulGemm");
        var sources = new[] { Instance(template, "gemm_nt", 0, 1), Instance(template, "gemm_nn", 0, 0), Instance(template, "gemm_tn", 1, 0), helpers };
        for (var side = PlannedGemmSide(Math.Min(Device.MaxWorkGroupSize, Tuning.MaxTiledGemmSide * Tuning.MaxTiledGemmSide)); ; side /= 2)
        {
            var options = string.Create(CultureInfo.InvariantCulture, $"-D RT={side} -D WPT={GemmOutputsPerItem}");
            var program = BuildProgram("Matmul", options, sources);
            var kernels = new MatmulKernels(program, GemmKernel.Tiled, side, 0);
            if (kernels.Fits || side == 1) return kernels;
            // The compiled GEMM needs more registers or local memory than a side x side group may use here.
            _programs.Remove(program);
            program.Dispose();
        }

        static string Instance(string template, string name, int aTrans, int bTrans) => string.Create(CultureInfo.InvariantCulture,
            $"#define GEMM_NAME {name}\n#define A_TRANS {aTrans}\n#define B_TRANS {bTrans}\n{template}\n#undef GEMM_NAME\n#undef A_TRANS\n#undef B_TRANS\n");
    }

    private enum GemmLayout
    {
        /// <summary>C = A B^T: A (M,K), B stored (N,K).</summary>
        Nt,

        /// <summary>C = A B: A (M,K), B stored (K,N).</summary>
        Nn,

        /// <summary>C = A^T B: A stored (K,M), B (K,N).</summary>
        Tn,
    }

    private sealed class MatmulKernels(OpenClProgram program, GemmKernel variant, int side, int width)
    {
        public GemmKernel Variant { get; } = variant;

        /// <summary>Tiled GEMM: work-items per side of the square work-group.</summary>
        public int Side { get; } = side;

        /// <summary>CPU GEMM: floats per vector.</summary>
        public int Width { get; } = width;

        public OpenClKernel? Nt { get; } = variant == GemmKernel.Tiled ? program.Kernel("gemm_nt") : null;
        public OpenClKernel? Nn { get; } = variant == GemmKernel.Tiled ? program.Kernel("gemm_nn") : null;
        public OpenClKernel? Tn { get; } = variant == GemmKernel.Tiled ? program.Kernel("gemm_tn") : null;
        public OpenClKernel? VectorN { get; } = variant == GemmKernel.Vector ? program.Kernel("gemm_vector_n") : null;
        public OpenClKernel? VectorT { get; } = variant == GemmKernel.Vector ? program.Kernel("gemm_vector_t") : null;
        public OpenClKernel? StageB { get; } = variant == GemmKernel.Vector ? program.Kernel("stage_b") : null;
        public OpenClKernel ColumnSumAccumulate { get; } = program.Kernel("column_sum_accumulate");
        public OpenClKernel GatherRows { get; } = program.Kernel("gather_rows");
        public OpenClKernel GatherColumns { get; } = program.Kernel("gather_columns");
        public OpenClKernel ScatterAddRows { get; } = program.Kernel("scatter_add_rows");
        public OpenClKernel ScatterAddColumns { get; } = program.Kernel("scatter_add_columns");
        public OpenClKernel ScaleRows { get; } = program.Kernel("scale_rows");

        public bool Fits => Variant == GemmKernel.Vector
            || Math.Min(Nt!.MaxWorkGroupSize, Math.Min(Nn!.MaxWorkGroupSize, Tn!.MaxWorkGroupSize)) >= Side * Side;
    }
}
