using ILGPU;
using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

// The GEMM every product of the Matmul family runs on: C = alpha op(A) op(B) (+ bias) (+ C), with
// A (M,K), B (K,N), C (M,N) row-major with row strides lda, ldb, ldc, and op() as the layout says.
//
// One explicitly grouped kernel: a group of S x S threads computes a 4S x 4S tile of C. Each step
// stages a GemmDepth-deep slab of A (4S x GemmDepth) and of B (GemmDepth x 4S) in shared memory; the
// loads map consecutive threads to consecutive addresses in whichever dimension is contiguous in global
// memory (coalesced), and the +1 padding of a tile row keeps the transposing stores free of bank
// conflicts. Thread (tx, ty) owns the 4 x 4 outputs (ty + i S, tx + j S), 0 <= i, j < 4, held in
// registers (GemmAccumulators): every value it reads from shared memory feeds 4 multiply-adds, and its
// reads of the B slab and writes of C are consecutive across tx.
//
// The side S is chosen per accelerator (GemmSideFor): 16 (256 threads) on a GPU; 1 on ILGPU's CPU
// accelerator, which runs every thread of a group as an OS thread and every barrier as a rendezvous of
// them all (CpuAcceleratorGemmSide). A group loops over tiles Grid.IdxX, Grid.IdxX + Grid.DimX, ...: on a
// GPU the grid covers every tile once; on the CPU accelerator a few groups take them all.
public sealed partial class IlgpuBackend
{
    /// <summary>Outputs per thread per side: the 4 x 4 register block of <see cref="GemmAccumulators"/>.</summary>
    private const int GemmBlock = 4;

    /// <summary>Depth of the K slab staged in shared memory per step.</summary>
    private const int GemmDepth = 16;

    /// <summary>Groups of a GEMM launch on ILGPU's CPU accelerator, each looping over its share of the tiles.</summary>
    private const int CpuAcceleratorGemmGroups = 4;

    /// <summary>
    /// The GEMM group's side S on ILGPU's CPU accelerator: 1. Measured on the 2-core VM (6 forward GEMMs of
    /// 257x300x129): 9 s at S = 1, 64 s at S = 4, 65 s at S = 8; a barrier of S^2 OS threads costs far more
    /// than the shared tile saves there.
    /// </summary>
    private const int CpuAcceleratorGemmSide = 1;

    private int? _gemmSide;

    /// <summary>
    /// Threads per side of the GEMM's square group: <see cref="GemmSideFor"/> unless set. Tests set it to run
    /// a GPU's configuration (16) on ILGPU's CPU accelerator.
    /// </summary>
    internal int GemmSide
    {
        get => _gemmSide ??= GemmSideFor(IsCpuAccelerator, MaxGroupSize);
        set
        {
            if (value is < 1 or > 16 || !int.IsPow2(value) || value * value > MaxGroupSize)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, $"the GEMM side must be a power of two from 1 to 16 whose square is at most {MaxGroupSize}");
            }
            _gemmSide = value;
        }
    }

    private Action<KernelConfig, GemmArguments, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>? _gemm;

    /// <summary>How the GEMM reads its operands.</summary>
    internal enum GemmLayout
    {
        /// <summary>C = A B^T: A (M,K), B stored (N,K).</summary>
        Nt,

        /// <summary>C = A B: A (M,K), B stored (K,N).</summary>
        Nn,

        /// <summary>C = A^T B: A stored (K,M), B (K,N).</summary>
        Tn,
    }

    [Flags]
    internal enum GemmFlags
    {
        /// <summary>C = alpha op(A) op(B).</summary>
        None = 0,

        /// <summary>Add bias(n) to every row (bias is (N)).</summary>
        Bias = 1,

        /// <summary>Add to C instead of overwriting it.</summary>
        Accumulate = 2,
    }

    /// <summary>The GEMM's scalar arguments, passed to the kernel by value (internal: ILGPU's CPU launcher reads it).</summary>
    internal readonly struct GemmArguments(int side, int m, int n, int k, float alpha, int lda, int ldb, int ldc, GemmLayout layout,
        GemmFlags flags)
    {
        /// <summary>Threads per side of the group, S: a power of two from 1 to 16.</summary>
        public readonly int Side = side;

        public readonly int M = m;
        public readonly int N = n;
        public readonly int K = k;
        public readonly float Alpha = alpha;
        public readonly int Lda = lda;
        public readonly int Ldb = ldb;
        public readonly int Ldc = ldc;
        public readonly int ATransposed = layout == GemmLayout.Tn ? 1 : 0;
        public readonly int BTransposed = layout == GemmLayout.Nt ? 1 : 0;
        public readonly int Bias = (flags & GemmFlags.Bias) != 0 ? 1 : 0;
        public readonly int Accumulate = (flags & GemmFlags.Accumulate) != 0 ? 1 : 0;

        /// <summary>Rows and columns of C per group: 4S.</summary>
        public int Tile => GemmBlock * Side;

        /// <summary>Row stride of a shared tile: one float of padding.</summary>
        public int TileStride => Tile + 1;

        /// <summary>Floats of shared memory a group uses: the A and B slabs.</summary>
        public int SharedFloats => 2 * GemmDepth * TileStride;
    }

    /// <summary>
    /// C = alpha op(A) op(B) (+ bias) (+ C), 4S x 4S tiles of C numbered row-major, tile t from row 4S (t / tile
    /// columns) and column 4S (t % tile columns). Explicitly grouped, S x S threads, with
    /// <see cref="GemmArguments.SharedFloats"/> floats of dynamic shared memory.
    /// </summary>
    private static void GemmKernel(GemmArguments g, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, ArrayView<float> bias)
    {
        var shared = SharedMemory.GetDynamic<float>();
        var slab = GemmDepth * g.TileStride;
        var aTile = shared.SubView(0, slab);
        var bTile = shared.SubView(slab, slab);
        var (side, tile, stride) = (g.Side, g.Tile, g.TileStride);
        var tx = Group.IdxX;
        var ty = Group.IdxY;
        var thread = ty * side + tx;
        var threads = side * side;
        var tileColumns = (g.N + tile - 1) / tile;
        var tiles = tileColumns * ((g.M + tile - 1) / tile);
        // A group takes tiles Grid.IdxX, Grid.IdxX + Grid.DimX, ...: one each where the grid covers them all.
        for (var t = Grid.IdxX; t < tiles; t += Grid.DimX)
        {
            var m0 = t / tileColumns * tile;
            var n0 = t % tileColumns * tile;
            var acc = default(GemmAccumulators);
            for (var k0 = 0; k0 < g.K; k0 += GemmDepth)
            {
                for (var e = thread; e < GemmDepth * tile; e += threads)
                {
                    // A(m,k) goes to aTile[k][m], B(k,n) to bTile[k][n]; consecutive threads take consecutive
                    // elements along the operand's contiguous dimension.
                    int am, ak, bn, bk;
                    if (g.ATransposed != 0) (ak, am) = (e / tile, e % tile);
                    else (am, ak) = (e / GemmDepth, e % GemmDepth);
                    if (g.BTransposed != 0) (bn, bk) = (e / GemmDepth, e % GemmDepth);
                    else (bk, bn) = (e / tile, e % tile);

                    var (gm, gak) = (m0 + am, k0 + ak);
                    var aValue = 0f;
                    if (gm < g.M && gak < g.K) aValue = a[g.ATransposed != 0 ? gak * g.Lda + gm : gm * g.Lda + gak];
                    aTile[ak * stride + am] = aValue;

                    var (gn, gbk) = (n0 + bn, k0 + bk);
                    var bValue = 0f;
                    if (gn < g.N && gbk < g.K) bValue = b[g.BTransposed != 0 ? gn * g.Ldb + gbk : gbk * g.Ldb + gn];
                    bTile[bk * stride + bn] = bValue;
                }
                Group.Barrier();
                for (var kk = 0; kk < GemmDepth; kk++)
                {
                    var row = kk * stride;
                    acc.Add(aTile[row + ty], aTile[row + ty + side], aTile[row + ty + 2 * side], aTile[row + ty + 3 * side],
                        bTile[row + tx], bTile[row + tx + side], bTile[row + tx + 2 * side], bTile[row + tx + 3 * side]);
                }
                Group.Barrier();
            }

            var n = n0 + tx;
            StoreGemmRow(g, c, bias, m0 + ty, n, acc.C00, acc.C01, acc.C02, acc.C03);
            StoreGemmRow(g, c, bias, m0 + ty + side, n, acc.C10, acc.C11, acc.C12, acc.C13);
            StoreGemmRow(g, c, bias, m0 + ty + 2 * side, n, acc.C20, acc.C21, acc.C22, acc.C23);
            StoreGemmRow(g, c, bias, m0 + ty + 3 * side, n, acc.C30, acc.C31, acc.C32, acc.C33);
        }
    }

    /// <summary>Writes a thread's outputs of row m: columns n, n + S, n + 2S, n + 3S.</summary>
    private static void StoreGemmRow(GemmArguments g, ArrayView<float> c, ArrayView<float> bias, int m, int n, float v0, float v1, float v2, float v3)
    {
        if (m >= g.M) return;
        StoreGemmValue(g, c, bias, m, n, v0);
        StoreGemmValue(g, c, bias, m, n + g.Side, v1);
        StoreGemmValue(g, c, bias, m, n + 2 * g.Side, v2);
        StoreGemmValue(g, c, bias, m, n + 3 * g.Side, v3);
    }

    private static void StoreGemmValue(GemmArguments g, ArrayView<float> c, ArrayView<float> bias, int m, int n, float sum)
    {
        if (n >= g.N) return;
        var index = m * g.Ldc + n;
        var value = g.Alpha * sum;
        if (g.Bias != 0) value += bias[n];
        if (g.Accumulate != 0) value += c[index];
        c[index] = value;
    }

    /// <summary>A thread's 4 x 4 block of C, in registers.</summary>
    private struct GemmAccumulators
    {
        public float C00, C01, C02, C03, C10, C11, C12, C13, C20, C21, C22, C23, C30, C31, C32, C33;

        /// <summary>C(i,j) += a_i b_j: one step of the outer product.</summary>
        public void Add(float a0, float a1, float a2, float a3, float b0, float b1, float b2, float b3)
        {
            C00 += a0 * b0;
            C01 += a0 * b1;
            C02 += a0 * b2;
            C03 += a0 * b3;
            C10 += a1 * b0;
            C11 += a1 * b1;
            C12 += a1 * b2;
            C13 += a1 * b3;
            C20 += a2 * b0;
            C21 += a2 * b1;
            C22 += a2 * b2;
            C23 += a2 * b3;
            C30 += a3 * b0;
            C31 += a3 * b1;
            C32 += a3 * b2;
            C33 += a3 * b3;
        }
    }

    /// <summary>
    /// C(M,N) = alpha op(A) op(B) (+ bias if <see cref="GemmFlags.Bias"/>) (+ C if <see cref="GemmFlags.Accumulate"/>),
    /// operands as <paramref name="layout"/> says, with row strides lda, ldb, ldc. Nothing runs when C is empty;
    /// with K = 0, C = bias (+ C).
    /// </summary>
    private void Gemm(string op, GemmLayout layout, int m, int n, int k, float alpha, ArrayView<float> a, int lda, ArrayView<float> b, int ldb,
        ArrayView<float> c, int ldc, GemmFlags flags = GemmFlags.None, ArrayView<float> bias = default)
    {
        if (m == 0 || n == 0) return;
        var kernel = Kernel(ref _gemm, accelerator => accelerator.LoadStreamKernel<GemmArguments, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>>(GemmKernel));
        var side = GemmSide;
        var arguments = new GemmArguments(side, m, n, k, alpha, lda, ldb, ldc, layout, flags);
        var tile = arguments.Tile;
        var tiles = (long)((n + tile - 1) / tile) * ((m + tile - 1) / tile);
        var groups = (int)Math.Min(tiles, IsCpuAccelerator ? CpuAcceleratorGemmGroups : int.MaxValue);
        var config = new KernelConfig(new Index2D(groups, 1), new Index2D(side, side),
            SharedMemoryConfig.RequestDynamic<float>(arguments.SharedFloats));
        if ((flags & GemmFlags.Bias) == 0) bias = _floatScratch.Placeholder;
        Launch(op, () => kernel(config, arguments, a, b, c, bias));
    }

    /// <summary>
    /// The GEMM group's side: 16 (256 threads, 64 x 64 tiles) where groups that large run, else the largest
    /// power of two whose square does; <see cref="CpuAcceleratorGemmSide"/> on ILGPU's CPU accelerator.
    /// </summary>
    private static int GemmSideFor(bool cpuAccelerator, int maxGroupSize)
    {
        if (cpuAccelerator) return CpuAcceleratorGemmSide;
        var side = 16;
        while (side > 1 && side * side > maxGroupSize) side /= 2;
        return side;
    }
}
