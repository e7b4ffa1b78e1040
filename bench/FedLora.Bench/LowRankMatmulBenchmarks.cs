using BenchmarkDotNet.Attributes;

namespace FedLora.Bench;

/// <summary>
/// LoRA matmul forward and backward (all gradients, and with the base frozen) at N = 2048, C in {128, 256, 512}, O in {C, 3C, 4C},
/// r in {4, 16, 64}. GFLOP/s counts the adapter's FLOPs (see <see cref="GemmProblem"/>).
/// </summary>
public class LowRankMatmulBenchmarks : IFlopCount, IDisposable
{
    private GemmProblem? _problem;

    [Params(128, 256, 512)]
    public int C { get; set; }

    [Params(1, 3, 4)]
    public int OTimesC { get; set; }

    [Params(4, 16, 64)]
    public int Rank { get; set; }

    /// <summary>The backend: "cpu", "ilgpu-cpu", and each GPU ILGPU finds (<see cref="BenchDevices.All"/>).</summary>
    [ParamsSource(nameof(Devices))]
    public string Device { get; set; } = "cpu";

    public static IEnumerable<string> Devices => BenchDevices.All;

    public int N { get; set; } = 2048;

    [GlobalSetup]
    public void Setup()
    {
        _problem = new GemmProblem(N, C, OTimesC * C, Rank, device: Device);
        _problem.CheckLora();
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _problem?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark]
    public void Forward() => _problem!.LoraForward();

    [Benchmark]
    public void Backward() => _problem!.LoraBackward();

    /// <summary>The backward of LoRA fine-tuning: the base is frozen, so no dW.</summary>
    [Benchmark]
    public void BackwardFrozenBase() => _problem!.LoraBackwardFrozenBase();

    public double Flops(string method)
    {
        var problem = new GemmProblem.Size(N, C, OTimesC * C, Rank);
        return method switch
        {
            nameof(Forward) => problem.LoraForwardFlops,
            nameof(Backward) => problem.LoraBackwardFlops,
            _ => problem.LoraBackwardFrozenBaseFlops,
        };
    }
}
