using System.Globalization;
using FedLora.Kernels;

namespace FedLora.Bench;

/// <summary>
/// One matmul-family problem at the model's shapes, on a backend (Cpu by default, or an ILGPU device): x (N,C), W (O,C), bias (O),
/// y and dy (N,O), a LoRA adapter A (r,C), B (O,r) with hidden t (N,r); seeded uniform values.
/// </summary>
/// <remarks>
/// Check() verifies every op once before timing, against dot products recomputed in double at sampled
/// entries: a cheap, independent check (the Reference backend takes seconds at these sizes).
/// </remarks>
public sealed class GemmProblem : IDisposable
{
    private readonly Backend _backend;
    private readonly float[] _x, _w, _dy, _a, _b, _bias;
    private readonly DeviceBuffer _xd, _wd, _dyd, _ad, _bd, _biasd, _yd, _dxd, _dwd, _td, _dad, _dbd;

    public GemmProblem(int n, int c, int o, int rank = 0, int seed = 1234, string device = "cpu")
    {
        _backend = Backends.Create(device);
        (N, C, O, Rank) = (n, c, o, rank);
        var rng = new Random(seed);
        _x = BenchData.Values(rng, n * c);
        _w = BenchData.Values(rng, o * c);
        _dy = BenchData.Values(rng, n * o);
        _a = BenchData.Values(rng, rank * c);
        _b = BenchData.Values(rng, o * rank);
        _bias = BenchData.Values(rng, o);
        _xd = BenchData.Upload(_backend, _x);
        _wd = BenchData.Upload(_backend, _w);
        _dyd = BenchData.Upload(_backend, _dy);
        _ad = BenchData.Upload(_backend, _a);
        _bd = BenchData.Upload(_backend, _b);
        _biasd = BenchData.Upload(_backend, _bias);
        _yd = _backend.Allocate(n * o);
        _dxd = _backend.Allocate(n * c);
        _dwd = _backend.Allocate(o * c);
        _td = _backend.Allocate(n * rank);
        _dad = _backend.Allocate(rank * c);
        _dbd = _backend.Allocate(o * rank);
    }

    public int N { get; }
    public int C { get; }
    public int O { get; }
    public int Rank { get; }

    /// <summary>The LoRA scale used by every LoRA op here (alpha = 2r, peft's default scaling alpha/r).</summary>
    public const float Scale = 2f;

    /// <summary>The FLOP counts of one problem size.</summary>
    public readonly record struct Size(double N, double C, double O, double Rank)
    {
        /// <summary>Multiply-adds times two of one plain GEMM: 2 N C O.</summary>
        public double GemmFlops => 2.0 * N * C * O;

        /// <summary>LoRA forward: 2NCO + 2NCr + 2NrO (the base GEMM, t = x A^T, and s t B^T).</summary>
        public double LoraForwardFlops => GemmFlops + 2.0 * N * C * Rank + 2.0 * N * Rank * O;

        /// <summary>LoRA backward with the base frozen: u = dy B, dx (K = O + r), dB, dA.</summary>
        public double LoraBackwardFrozenBaseFlops => 2.0 * N * O * Rank + 2.0 * N * (O + Rank) * C + 2.0 * N * O * Rank + 2.0 * N * Rank * C;

        /// <summary>LoRA backward with every gradient: the frozen-base ones and dW.</summary>
        public double LoraBackwardFlops => LoraBackwardFrozenBaseFlops + GemmFlops;
    }

    /// <summary>This problem's FLOP counts.</summary>
    public Size Flops => new(N, C, O, Rank);

    // Each op ends with Synchronize() so that a timer stops after the work, on asynchronous devices too
    // (ILGPU); on the Cpu backend it returns at once.
    public void Forward()
    {
        _backend.MatmulForward(N, C, O, _xd, _wd, _biasd, _yd);
        _backend.Synchronize();
    }

    public void BackwardInput()
    {
        _backend.MatmulBackward(N, C, O, _dyd, _xd, _wd, _dxd, null, null, accumulate: false);
        _backend.Synchronize();
    }

    public void BackwardWeight()
    {
        _backend.MatmulBackward(N, C, O, _dyd, _xd, _wd, null, _dwd, null);
        _backend.Synchronize();
    }

    public void LoraForward()
    {
        _backend.LowRankMatmulForward(N, C, O, Rank, _xd, _wd, _biasd, _ad, _bd, Scale, null, _td, _yd);
        _backend.Synchronize();
    }

    public void LoraBackward()
    {
        _backend.LowRankMatmulBackward(N, C, O, Rank, _dyd, _xd, _wd, _ad, _bd, Scale, null, _td, _dxd, _dwd, null, _dad, _dbd, accumulate: false);
        _backend.Synchronize();
    }

    /// <summary>LoRA backward of fine-tuning (base frozen): u, dx, dB, dA; no dW.</summary>
    public void LoraBackwardFrozenBase()
    {
        _backend.LowRankMatmulBackward(N, C, O, Rank, _dyd, _xd, _wd, _ad, _bd, Scale, null, _td, _dxd, null, null, _dad, _dbd, accumulate: false);
        _backend.Synchronize();
    }

    /// <summary>Runs each op once from zeroed outputs and checks sampled entries; throws on a mismatch.</summary>
    public void Check()
    {
        CheckMatmul();
        CheckLora();
    }

    /// <summary>Checks the plain matmul's forward, dx and dW at sampled entries.</summary>
    public void CheckMatmul()
    {
        var rng = new Random(99);
        Forward();
        var y = _backend.ToArray(_yd);
        Sample(rng, "forward y", N, O, y, (i, j) => _bias[j] + Dot(C, (p) => _x[i * C + p], (p) => _w[j * C + p]), C);

        _backend.Fill(_dxd, float.NaN); // overwritten, as in the model's backward (and numpy's dx = dy @ W)
        BackwardInput();
        var dx = _backend.ToArray(_dxd);
        Sample(rng, "backward dx", N, C, dx, (i, j) => Dot(O, (p) => _dy[i * O + p], (p) => _w[p * C + j]), O);

        _backend.Fill(_dwd, 0);
        BackwardWeight();
        var dw = _backend.ToArray(_dwd);
        Sample(rng, "backward dW", O, C, dw, (i, j) => Dot(N, (p) => _dy[p * O + i], (p) => _x[p * C + j]), N);

        _backend.Fill(_dxd, 0);
        _backend.Fill(_dwd, 0);
    }

    /// <summary>Checks the LoRA forward's y and the LoRA backward's dA at sampled entries.</summary>
    public void CheckLora()
    {
        var rng = new Random(98);
        if (Rank > 0)
        {
            LoraForward();
            var y = _backend.ToArray(_yd);
            Sample(rng, "LoRA forward y", N, O, y, (i, j) =>
            {
                var sum = (double)_bias[j] + Dot(C, (p) => _x[i * C + p], (p) => _w[j * C + p]);
                for (var q = 0; q < Rank; q++) sum += Scale * Dot(C, (p) => _x[i * C + p], (p) => _a[q * C + p]) * _b[j * Rank + q];
                return sum;
            }, C + Rank);
            _backend.Fill(_dad, 0);
            _backend.Fill(_dbd, 0);
            LoraBackward();
            var da = _backend.ToArray(_dad);
            Sample(rng, "LoRA backward dA", Rank, C, da, (q, j) =>
            {
                double sum = 0;
                for (var i = 0; i < N; i++) sum += Dot(O, (p) => _dy[i * O + p], (p) => _b[p * Rank + q]) * _x[i * C + j];
                return Scale * sum;
            }, N * 4, samples: 4);
        }
        _backend.Fill(_dxd, 0);
        _backend.Fill(_dwd, 0);
    }

    private static double Dot(int k, Func<int, float> left, Func<int, float> right)
    {
        double sum = 0;
        for (var p = 0; p < k; p++) sum += (double)left(p) * right(p);
        return sum;
    }

    private static void Sample(Random rng, string what, int rows, int cols, float[] actual, Func<int, int, double> expected, int k, int samples = 48)
    {
        if (rows == 0 || cols == 0) return;
        var tolerance = 1e-4 * Math.Sqrt(k + 1);
        for (var s = 0; s < samples; s++)
        {
            var i = rng.Next(rows);
            var j = rng.Next(cols);
            var want = expected(i, j);
            var got = actual[i * cols + j];
            if (Math.Abs(want - got) > tolerance * (1 + Math.Abs(want)))
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"{what} [{i},{j}] is {got}, expected {want:G9} (tolerance {tolerance:G3} + rel)"));
            }
        }
    }

    public void Dispose() => _backend.Dispose();
}
