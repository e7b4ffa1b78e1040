using BenchmarkDotNet.Attributes;

namespace FedLora.Bench;

/// <summary>
/// The Cpu matmul's three GEMMs at the model's shapes: N = 2048 rows, C in {128, 256, 512},
/// O in {C, 3C, 4C} (attn.c_proj, attn.c_attn, mlp.c_fc; mlp.c_proj is c_fc's transpose).
/// forward y = x W^T (M=N, N=O, K=C); backward dx += dy W (K=O); dW += dy^T x (K=N).
/// </summary>
public class MatmulBenchmarks : IFlopCount, IDisposable
{
    private GemmProblem? _problem;

    [Params(128, 256, 512)]
    public int C { get; set; }

    [Params(1, 3, 4)]
    public int OTimesC { get; set; }

    /// <summary>The backend: "cpu", "ilgpu-cpu", and each GPU ILGPU finds (<see cref="BenchDevices.All"/>).</summary>
    [ParamsSource(nameof(Devices))]
    public string Device { get; set; } = "cpu";

    public static IEnumerable<string> Devices => BenchDevices.All;

    public int N { get; set; } = 2048;

    [GlobalSetup]
    public void Setup()
    {
        _problem = new GemmProblem(N, C, OTimesC * C, device: Device);
        _problem.CheckMatmul();
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _problem?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark]
    public void Forward() => _problem!.Forward();

    [Benchmark]
    public void BackwardInput() => _problem!.BackwardInput();

    [Benchmark]
    public void BackwardWeight() => _problem!.BackwardWeight();

    public double Flops(string method) => new GemmProblem.Size(N, C, OTimesC * C, 0).GemmFlops;
}
