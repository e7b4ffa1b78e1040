// The Cpu backend's one GEMM engine: c(M,N) (+)= a(M,K) b(K,N) [+ bias(N)], a read as rows i and
// b as columns i of strided operands (GemmPack.cs), c through a strided or index-mapped output.
// matmul forward:  y(N,O)  = x(N,C) W(O,C)^T + bias   M = N, N = O, K = C
// matmul dx:       dx(N,C) += dy(N,O) W(O,C)          M = N, N = C, K = O
// matmul dW:       dW(O,C) += dy^T x                  M = O, N = C, K = N
// LoRA, stacked aggregation: CpuBackend.Matmul.cs. Micro-kernels: GemmKernels.cs.
using System.Runtime.CompilerServices;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// Where a GEMM writes: element (i, j) of the (M,N) result lives at
/// Data[row(i) * RowStride + col(j) * ColStride], row(i) = RowIndex[i] (or i), col(j) = ColIndex[j] (or j).
/// Plain row-major output has ColStride 1 and no index maps; the maps scatter LoRA gradients into
/// the adapter's columns or rows I.
/// </summary>
internal unsafe struct GemmOutput
{
    public float* Data;
    public nint RowStride;
    public nint ColStride;
    public int* RowIndex;
    public int* ColIndex;

    public static GemmOutput RowMajor(float* data, nint rowStride) => new() { Data = data, RowStride = rowStride, ColStride = 1 };

    public readonly bool IsDirect => ColStride == 1 && RowIndex == null && ColIndex == null;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly float* At(int i, int j) =>
        Data + (RowIndex == null ? i : RowIndex[i]) * RowStride + (ColIndex == null ? j : ColIndex[j]) * ColStride;
}

/// <summary>
/// FedLora's one GEMM engine: c(M,N) (+)= a(M,K) b(K,N) [+ bias(N)], where a and b are
/// <see cref="GemmOperand"/>s (a read as (i = row, p), b as (i = column, p)) so that packing absorbs
/// every transpose, index set and per-K weight.
/// </summary>
/// <remarks>
/// <para>Blocking (BLIS's, adapted to a in place): for each chunk of NC columns (K x NC floats of packed b
/// within L3), one parallel job first packs b's chunk into NR-wide micro-panels holding the whole K,
/// then computes output tiles of (at most MT rows) x (a run of micro-panels), one tile per task. a is
/// read in place when it is a plain strided matrix (x, dy, dy^T: the kernels take its strides) with a
/// short enough K stride (GemmPack.ReadsInPlace) that is not a multiple of 4 KB (GemmJob.Split);
/// otherwise, and for edge rows and LoRA's K tail, a tile packs it into MR-wide panels, one group of
/// K blocks at a time. A tile
/// walks K in groups (its a slice stays in L2), b's micro-panels, K blocks of KC (a KC x NR
/// micro-panel stays in L1) and MR-row panels; its c tile stays in L1 across a group's K blocks.</para>
/// <para>Determinism: each output element belongs to exactly one task, which adds its K blocks in
/// order, so results never depend on which thread ran what.</para>
/// <para>Edge tiles: packed panels are zero-padded, the micro-kernel always computes a full MR x NR tile,
/// and partial tiles (or scattered outputs) go through a small tile buffer.</para>
/// </remarks>
internal static unsafe class Gemm
{
    /// <summary>The micro-kernel for the vector width in use: its tile, its blocking and its code.</summary>
    private readonly struct Shape(int mr, int nr, int kc, int mt, delegate*<int, float*, nint, nint, int, float*, float*, float*, nint, float*, bool, void> kernel)
    {
        public readonly int MR = mr;
        public readonly int NR = nr;
        public readonly int KC = kc;
        public readonly int MT = mt;
        public readonly delegate*<int, float*, nint, nint, int, float*, float*, float*, nint, float*, bool, void> Kernel = kernel;
    }

    private static readonly Shape Selected =
        SimdWidth.Use512 ? new Shape(8, 32, 256, 128, &GemmKernels.Kernel8x32)
        : SimdWidth.Use256 ? new Shape(6, 16, 256, 96, &GemmKernels.Kernel6x16)
        : SimdWidth.Use128 ? new Shape(6, 8, 256, 96, &GemmKernels.Kernel6x8)
        : new Shape(4, 4, 256, 64, &GemmKernels.Kernel4x4);

    /// <summary>For GEMMs of at most NR columns (LoRA's hidden products); the same as Selected below 512 bits.</summary>
    private static readonly Shape Narrow =
        SimdWidth.Use512 ? new Shape(16, 16, 256, 128, &GemmKernels.Kernel16x16) : Selected;

    /// <summary>
    /// Narrow's columns with half its rows, for an a read in place whose rows lie a multiple of 4 KB apart
    /// (x or dy with C or O = 1024): the 16 rows of a Narrow panel then share one L1 set, which holds 12
    /// lines on Zen 5, and every broadcast of a misses L1. Measured on t = x A^T, 2048 x 1024 x 16, both
    /// cores: 0.267 ms with 16 rows, 0.173 ms with 8 (0.160-0.181 ms with 16 rows 4160 bytes apart).
    /// </summary>
    private static readonly Shape NarrowFewRows =
        SimdWidth.Use512 ? new Shape(8, 16, 256, 128, &GemmKernels.Kernel8x16) : Selected;

    /// <summary>Floats of packed b kept at once: K x NC for one column chunk (8 MB, within L3).</summary>
    private const int PackedBBudget = 2 << 20;

    /// <summary>Floats of a that a tile keeps in L2 across b's micro-panels (a quarter of Zen 5's 1 MB).</summary>
    private const int GroupFloats = 1 << 16;

    /// <summary>
    /// Floats (one cache line) between a packed a panel's end and the next panel: at MR = 8 and a group of 512
    /// K entries, unpadded panels lie 16 KB apart, so the same K entry of every panel shares one L1 set and
    /// packing a tile's 16 panels at once evicts its own writes. dW 2048x256x1024 (dy^T packed), one core and
    /// both cores: 190 -> 205 and 372 -> 399 GFLOP/s; 2048x512x2048 2%.
    /// </summary>
    private const int PanelPadding = 16;

    /// <summary>Below this many multiply-adds (about 10 us on one core) a GEMM runs on the calling thread only.</summary>
    private const long SerialWork = 1 << 20;

    /// <summary>
    /// c(M,N) = a b + bias, or c += a b when <paramref name="accumulate"/>. a is (M,K) as an operand of
    /// rows i, b is (K,N) as an operand of columns i. bias (N) may be null and is only read when
    /// overwriting. rowSums (M), if not null, receives += the row sums of a, added in K order by the
    /// tiles that own those rows (a bias gradient folded into the GEMM: with a = dy^T they are colsum(dy)).
    /// </summary>
    public static void Run(int m, int n, int k, in GemmOperand a, in GemmOperand b, in GemmOutput c,
        bool accumulate, float* bias = null, float* rowSums = null)
    {
        if (m == 0 || n == 0) return;
        if (k == 0)
        {
            if (!accumulate) WriteBias(m, n, c, bias);
            return;
        }
        // Always in the caller's orientation: running c^T = b^T a^T to save padding lanes was tried and
        // lost 1.1-2.1x everywhere it applied (LM head 2048x128x257, LoRA ranks 17-31), because it
        // packs the big operand and scatters every output through the tile buffer.
        var rowsAlias = GemmPack.ReadsInPlace(a.Head) && a.Head.KStride == 1 && GemmPack.IsPageMultiple(a.Head.RowStride);
        var shape = n > Narrow.NR ? Selected : rowsAlias ? NarrowFewRows : Narrow;
        var slice = KSlice(n, k, a, b, rowSums, shape);
        if (slice == k)
        {
            Blocked(m, n, k, a, b, c, accumulate, bias, rowSums, shape);
            return;
        }
        for (var k0 = 0; k0 < k; k0 += slice)
        {
            var kc = Math.Min(slice, k - k0);
            Blocked(m, n, kc, SliceK(a, k0, kc), SliceK(b, k0, kc), c, accumulate || k0 > 0, bias, null, shape);
        }
    }

    /// <summary>
    /// The K entries per pass: all of K, unless K is so long that b's packed chunk (K x NC within
    /// <see cref="PackedBBudget"/>) would hold fewer than 8 micro-panels while the output has more
    /// columns (the LM head's dx = dlogits W, K = V = 50,257: one micro-panel of 32 columns per chunk,
    /// each chunk a fork/join that reads all of dlogits again). Then K is cut into slices of whole KC
    /// blocks that run one after another, each adding onto c, and each slice's chunk spans up to 1024
    /// columns. Plain operands only (no LoRA tail, K index or K weights), and no row sums. Every tile
    /// still adds its KC blocks in K order, so the result is the same bit for bit. Measured on the head's
    /// dx (166 x 768 x 50,257, both cores, a loaded machine): 67-94 -> 121-139 GFLOP/s.
    /// </summary>
    private static int KSlice(int n, int k, in GemmOperand a, in GemmOperand b, float* rowSums, in Shape shape)
    {
        var nr = shape.NR;
        var columns = (n + nr - 1) / nr * nr;
        if ((long)k * 8 * nr <= PackedBBudget || columns <= 8 * nr || rowSums != null || !IsPlain(a, k) || !IsPlain(b, k)) return k;
        return Math.Max(shape.KC, PackedBBudget / Math.Min(columns, 1024) / shape.KC * shape.KC);
    }

    private static bool IsPlain(in GemmOperand operand, int k) => operand.HeadK == k && operand.Head.KIndex == null && operand.Head.KScale == null;

    private static GemmOperand SliceK(in GemmOperand operand, int k0, int kc)
    {
        var head = operand.Head;
        head.Data += k0 * head.KStride;
        return GemmOperand.Plain(head, kc);
    }

    private static void WriteBias(int m, int n, in GemmOutput c, float* bias)
    {
        for (var i = 0; i < m; i++)
        {
            for (var j = 0; j < n; j++) *c.At(i, j) = bias == null ? 0f : bias[j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Blocked(int m, int n, int k, in GemmOperand a, in GemmOperand b, in GemmOutput c,
        bool accumulate, float* bias, float* rowSums, in Shape shape)
    {
        var nr = shape.NR;
        var chunk = Math.Max(nr, PackedBBudget / k / nr * nr);
        chunk = Math.Min(chunk, (n + nr - 1) / nr * nr);
        var packedB = GemmWorkspace.Caller.PackedB((long)k * chunk);
        var serial = (long)m * n * k <= SerialWork;
        var tasks = serial ? 1 : 4 * CpuParallel.ThreadCount;
        for (var n0 = 0; n0 < n; n0 += chunk)
        {
            var nc = Math.Min(chunk, n - n0);
            var panels = (nc + nr - 1) / nr;
            var packTasksDone = 0;
            var job = new GemmJob
            {
                A = a,
                B = b,
                C = c,
                PackedB = packedB,
                M = m,
                K = k,
                N0 = n0,
                Nc = nc,
                Shape = shape,
                Accumulate = accumulate,
                Bias = bias,
                RowSums = n0 == 0 ? rowSums : null,
                PackTasksDone = &packTasksDone,
            };
            if (GemmPack.IsKMajor(b.Head))
            {
                // b's columns are contiguous and its K entries far apart (x in dW and dA, W in dx): each
                // pack task takes a range of K for every panel and reads its rows whole and in order,
                // instead of walking one panel down K a page per entry. Both cores, A/B in one process:
                // LoRA's dA (C = 1024) 8-12% faster, dW and LoRA backward 0-2.6%, dx unchanged.
                job.KPerPackTask = Math.Max(16, (k + tasks - 1) / tasks);
                job.PackTasks = (k + job.KPerPackTask - 1) / job.KPerPackTask;
            }
            else
            {
                job.PanelsPerPackTask = (panels + tasks - 1) / tasks;
                job.PackTasks = (panels + job.PanelsPerPackTask - 1) / job.PanelsPerPackTask;
            }
            job.Split(panels, tasks);
            CpuParallel.For(job.PackTasks + job.RowBlocks * job.ColBlocks, ref job);
        }
    }

    /// <summary>
    /// One column chunk of a GEMM as one parallel job: tasks [0, PackTasks) pack b's micro-panels (each
    /// over the whole K; the tasks split them by panels, or by K ranges), the remaining tasks compute
    /// output tiles of MT rows by a run of micro-panels. CpuParallel hands out task indices in increasing
    /// order, so every packing task is running or done before a tile task starts; a tile task waits
    /// (spinning) for the packing count to complete. One fork/join per GEMM instead of two.
    /// </summary>
    private struct GemmJob : IParallelJob
    {
        public GemmOperand A;
        public GemmOperand B;
        public GemmOutput C;
        public float* PackedB;
        public int M, K, N0, Nc;
        public Shape Shape;
        public bool Accumulate;
        public float* Bias;
        public float* RowSums;
        public int PackTasks, PanelsPerPackTask, KPerPackTask;
        public int* PackTasksDone;
        public int RowBlocks, ColBlocks, RowsPerBlock, PanelsPerBlock, GroupK;

        /// <summary>Whether the tiles read a's head in place (set by <see cref="Split"/>), or pack it group by group.</summary>
        public bool AInPlace;

        public readonly void Execute(int index)
        {
            if (index < PackTasks)
            {
                try
                {
                    Pack(index);
                }
                finally
                {
                    Interlocked.Increment(ref *PackTasksDone);
                }
                return;
            }
            var spinner = default(SpinWait);
            while (Volatile.Read(ref *PackTasksDone) < PackTasks) spinner.SpinOnce(sleep1Threshold: -1);
            Compute(index - PackTasks);
        }

        /// <summary>
        /// Packs b's column chunk into micro-panels of the whole K (panel j at PackedB + j*K*NR): K entries
        /// [task*KPerPackTask, ...) of every panel when b is K-major, else panels [task*PanelsPerPackTask, ...).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private readonly void Pack(int task)
        {
            var nr = Shape.NR;
            if (KPerPackTask > 0)
            {
                var k0 = task * KPerPackTask;
                var k1 = Math.Min(K, k0 + KPerPackTask);
                var full = Nc / nr;
                var headEnd = Math.Min(k1, B.HeadK);
                if (headEnd > k0)
                {
                    GemmPack.KMajorPanels(B.Head.Data + N0 + k0 * B.Head.KStride, B.Head.KStride, full, nr, headEnd - k0,
                        PackedB + (nint)k0 * nr, (nint)K * nr);
                }
                // A tail (LoRA's A_I rows in dx), then a partial last panel, zero-padded, through the general packing.
                var tailStart = Math.Max(k0, B.HeadK);
                for (var panel = 0; panel < full && tailStart < k1; panel++)
                {
                    GemmPack.Panel(B, N0 + panel * nr, nr, nr, tailStart, k1 - tailStart, PackedB + (nint)panel * K * nr + (nint)tailStart * nr);
                }
                if (full * nr < Nc)
                {
                    GemmPack.Panel(B, N0 + full * nr, Nc - full * nr, nr, k0, k1 - k0, PackedB + (nint)full * K * nr + (nint)k0 * nr);
                }
                return;
            }
            var first = task * PanelsPerPackTask;
            var last = Math.Min(first + PanelsPerPackTask, (Nc + nr - 1) / nr);
            for (var panel = first; panel < last; panel++)
            {
                var j = panel * nr;
                GemmPack.Panel(B, N0 + j, Math.Min(nr, Nc - j), nr, 0, K, PackedB + (nint)panel * K * nr);
            }
        }

        /// <summary>Cuts the chunk into about <paramref name="tasks"/> tiles of at most MT rows that together read the least of a and b.</summary>
        public void Split(int panels, int tasks)
        {
            var mr = Shape.MR;
            var rowPanels = (M + mr - 1) / mr;
            // Tiles of at most MT rows, at least `tasks` of them (when the chunk has that many MR x NR
            // tiles); among those splits, the one that reads the least: each tile reads K x its rows of
            // a and K x its columns of b, ColBlocks*M + RowBlocks*Nc in all, per K. For the dW GEMMs
            // (K = 2048 against M = O and N = C of 128-512) that means squarer tiles than whole rows:
            // measured with both cores, dW 2048x128x128 4-10% faster and 2048x512x512 3-6%.
            // A GEMM of fewer than MT rows (LoRA's dA, M = r) splits its rows first, into up to `tasks`
            // blocks: the cost model prefers one block of all rows, which measured 1-4% slower in LoRA's backward.
            var want = Math.Min(tasks, rowPanels * panels);
            var panelsPerTile = Shape.MT / mr;
            var bestCost = long.MaxValue;
            for (var r = M < Shape.MT ? Math.Min(rowPanels, tasks) : (rowPanels + panelsPerTile - 1) / panelsPerTile; r <= rowPanels; r++)
            {
                var rowPanelsPerBlock = (rowPanels + r - 1) / r;
                var rowBlocks = (rowPanels + rowPanelsPerBlock - 1) / rowPanelsPerBlock;
                var colBlocks = Math.Min(panels, Math.Max(1, (tasks + rowBlocks - 1) / rowBlocks));
                var panelsPerBlock = (panels + colBlocks - 1) / colBlocks;
                colBlocks = (panels + panelsPerBlock - 1) / panelsPerBlock;
                var cost = (long)colBlocks * M + (long)rowBlocks * Nc;
                if ((rowBlocks * colBlocks < want && r < rowPanels) || cost >= bestCost) continue;
                bestCost = cost;
                RowsPerBlock = rowPanelsPerBlock * mr;
                RowBlocks = rowBlocks;
                PanelsPerBlock = panelsPerBlock;
                ColBlocks = colBlocks;
                if (colBlocks == 1 && rowBlocks >= want) break; // more row blocks only cost more
            }
            // A K-major a read in place (dy^T in dW) has its slice's K entries one K stride apart: they map
            // onto few L2 sets, and more than one K block of them does not stay in L2. Measured with
            // both cores, dW 2048x512x512 4-12% faster with one K block per group, 2048x256x256 2-3%.
            // A K-major a whose K stride is a multiple of 4 KB (dy^T in dW with O = 1024) maps a tile's slice
            // (128 rows x 256 K entries) onto 128 L2 sets of 16 lines, which it fills: read in place, it comes
            // again from L3 for each of b's micro-panels. Packing it in one pass (GemmPack.KMajorPanels) pays
            // when b's chunk is 8 micro-panels wide or more: one core / both cores, dW 2048x512x1024 184 -> 200
            // / 372 -> 401 GFLOP/s, 2048x1024x1024 174 -> 195 / 355 -> 393, 2048x256x1024 194 -> 196 / 332 ->
            // 355. At 4 (2048x128x1024) packing lost 4%, so a chunk of at most 4 is still read in place, as is
            // LoRA's dB (one micro-panel), which reads dy^T once anyway.
            var kMajor = GemmPack.IsKMajor(A.Head);
            AInPlace = GemmPack.ReadsInPlace(A.Head) && !(kMajor && GemmPack.IsPageMultiple(A.Head.KStride) && Nc > 4 * Shape.NR);
            var kMajorInPlace = kMajor && AInPlace;
            GroupK = kMajorInPlace ? Shape.KC : Math.Max(Shape.KC, GroupFloats / RowsPerBlock / Shape.KC * Shape.KC);
        }

        /// <summary>
        /// The tile's loop nest: for each group of K blocks (GroupK entries), for each micro-panel of b, for
        /// each K block of the group, for each MR-row panel of a. The c tile (rows x NR) stays in L1 across
        /// a group's K blocks (one group when K &lt;= 512 at MT = 128), the group's slice of a (read in place,
        /// or packed at the group's start) in L2 across b's micro-panels, and each KC x NR micro-panel of b in L1
        /// across the row panels.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private readonly void Compute(int index)
        {
            var mr = Shape.MR;
            var nr = Shape.NR;
            var rowBlock = index / ColBlocks;
            var colBlock = index % ColBlocks;
            var i0 = rowBlock * RowsPerBlock;
            var rows = Math.Min(RowsPerBlock, M - i0);
            var rowPanels = (rows + mr - 1) / mr;
            var firstPanel = colBlock * PanelsPerBlock;
            var lastPanel = Math.Min(firstPanel + PanelsPerBlock, (Nc + nr - 1) / nr);
            // A short tail of K (LoRA's k ranks) rides along the last block of the head, in the same
            // kernel call: no extra pass over c.
            var tailK = K - A.HeadK;
            var mergeTail = A.HeadK > 0 && tailK > 0 && tailK <= Shape.KC;
            var head = A.Head;
            var tile = stackalloc float[mr * nr + 16];
            var direct = C.IsDirect;
            if (colBlock == 0 && RowSums != null)
            {
                for (var i = i0; i < i0 + rows; i += mr) GemmPack.AddRowSums(A, i, Math.Min(mr, i0 + rows - i), 0, K, RowSums + i);
            }

            // What the kernel cannot read in place is packed group by group: packed panel ip holds the
            // group's groupK entries x MR floats at packedA + ip*(MR*groupK + PanelPadding) (an in-place
            // panel: only its tail entries).
            var packedA = GemmWorkspace.Worker.PackedA((long)rowPanels * (mr * (GroupK + Shape.KC) + PanelPadding));
            for (var g0 = 0; g0 < K;)
            {
                // A group of K blocks whose slice of a (rows x GroupK) stays in L2 while b's micro-panels pass.
                var gEnd = g0;
                while (gEnd < K && (gEnd == g0 || gEnd - g0 + Math.Min(Shape.KC, K - gEnd) <= GroupK))
                {
                    var inHead = gEnd < A.HeadK;
                    var kc = Math.Min(Shape.KC, (inHead ? A.HeadK : K) - gEnd);
                    gEnd += kc + (mergeTail && inHead && gEnd + kc == A.HeadK ? tailK : 0);
                }
                var groupK = gEnd - g0;
                var panelStride = (nint)mr * groupK + PanelPadding;
                if (!AInPlace)
                {
                    GemmPack.Panels(A, i0, rows, mr, g0, groupK, packedA, panelStride);
                }
                else
                {
                    // Read in place: an edge panel (fewer than MR rows) is packed whole, a full panel only its K tail.
                    for (var ip = 0; ip < rowPanels; ip++)
                    {
                        var i = i0 + ip * mr;
                        var valid = Math.Min(mr, i0 + rows - i);
                        var panel = packedA + ip * panelStride;
                        if (valid < mr)
                        {
                            GemmPack.Panel(A, i, valid, mr, g0, groupK, panel);
                        }
                        else if (gEnd > A.HeadK)
                        {
                            var from = Math.Max(g0, A.HeadK);
                            GemmPack.Panel(A, i, valid, mr, from, gEnd - from, panel + (nint)(from - g0) * mr);
                        }
                    }
                }
                for (var jp = firstPanel; jp < lastPanel; jp++)
                {
                    var jLocal = jp * nr;
                    var j = N0 + jLocal;
                    var cols = Math.Min(nr, Nc - jLocal);
                    var bColumn = PackedB + (nint)jp * K * nr;
                    for (var p0 = g0; p0 < gEnd;)
                    {
                        var inHead = p0 < A.HeadK;
                        var kc = Math.Min(Shape.KC, (inHead ? A.HeadK : K) - p0);
                        var kcTail = mergeTail && inHead && p0 + kc == A.HeadK ? tailK : 0;
                        var accumulate = Accumulate || p0 > 0;
                        var columnBias = accumulate || Bias == null ? null : Bias + j;
                        var bPanel = bColumn + (nint)p0 * nr;
                        for (var ip = 0; ip < rowPanels; ip++)
                        {
                            var i = i0 + ip * mr;
                            var valid = Math.Min(mr, i0 + rows - i);
                            var panel = packedA + ip * panelStride - (nint)g0 * mr;
                            // In place: kc entries at a[i*ars + p*aks], then kcTail packed ones; else all packed.
                            var inPlace = inHead && AInPlace && valid == mr;
                            var a = inPlace ? head.Data + i * head.RowStride + p0 * head.KStride : panel + (nint)p0 * mr;
                            var ars = inPlace ? head.RowStride : 1;
                            var aks = inPlace ? head.KStride : mr;
                            var kcIn = inPlace ? kc : kc + kcTail;
                            var kcPacked = inPlace ? kcTail : 0;
                            var aTail = panel + (nint)A.HeadK * mr;
                            if (direct && valid == mr && cols == nr)
                            {
                                Shape.Kernel(kcIn, a, ars, aks, kcPacked, aTail, bPanel, C.Data + i * C.RowStride + j, C.RowStride, columnBias, accumulate);
                            }
                            else
                            {
                                Shape.Kernel(kcIn, a, ars, aks, kcPacked, aTail, bPanel, tile, nr, null, false);
                                StoreTile(tile, nr, valid, cols, C, i, j, accumulate, columnBias);
                            }
                        }
                        p0 += kc + kcTail;
                    }
                }
                g0 = gEnd;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void StoreTile(float* tile, int nr, int rows, int cols, in GemmOutput c, int i0, int j0, bool accumulate, float* bias)
        {
            if (c.IsDirect)
            {
                for (var i = 0; i < rows; i++)
                {
                    var from = tile + i * nr;
                    var to = c.Data + (i0 + i) * c.RowStride + j0;
                    if (accumulate)
                    {
                        for (var j = 0; j < cols; j++) to[j] += from[j];
                    }
                    else
                    {
                        for (var j = 0; j < cols; j++) to[j] = bias == null ? from[j] : from[j] + bias[j];
                    }
                }
                return;
            }
            for (var i = 0; i < rows; i++)
            {
                for (var j = 0; j < cols; j++)
                {
                    var value = tile[i * nr + j];
                    var to = c.At(i0 + i, j0 + j);
                    *to = accumulate ? *to + value : bias == null ? value : value + bias[j];
                }
            }
        }
    }
}

/// <summary>
/// Packing buffers, allocated once per thread and grown when a larger GEMM asks (never on the steady
/// state's hot path). <see cref="Caller"/> holds what one GEMM call shares between its tasks (packed b,
/// LoRA's hidden products); <see cref="Worker"/> holds one task's packed a.
/// </summary>
internal sealed unsafe class GemmWorkspace
{
    [ThreadStatic] private static GemmWorkspace? t_caller;
    [ThreadStatic] private static GemmWorkspace? t_worker;

    private readonly Slot _packedA = new();
    private readonly Slot _packedB = new();
    private readonly Slot _scratch = new();

    public static GemmWorkspace Caller => t_caller ??= new GemmWorkspace();

    public static GemmWorkspace Worker => t_worker ??= new GemmWorkspace();

    public float* PackedA(long floats) => _packedA.Get(floats);

    public float* PackedB(long floats) => _packedB.Get(floats);

    public float* Scratch(long floats) => _scratch.Get(floats);

    /// <summary>A pinned array with a 64-byte aligned start.</summary>
    private sealed class Slot
    {
        private float[] _array = [];
        private float* _aligned;
        private long _capacity;

        public float* Get(long floats)
        {
            if (floats > _capacity)
            {
                _array = GC.AllocateUninitializedArray<float>(checked((int)floats + 16), pinned: true);
                var start = (nint)Unsafe.AsPointer(ref _array[0]);
                _aligned = (float*)((start + 63) & ~(nint)63);
                _capacity = floats;
            }
            return _aligned;
        }
    }
}
