using BenchmarkDotNet.Attributes;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Reference;

namespace FedLora.Bench;

/// <summary>
/// The federated aggregation kernels at the model's shapes, O = 3C (the qkv projection):
/// FLoRA's stacked aggregation W(O,C) += B_stack(O,R) diag(w) A_stack(R,C) with R = 10 clients x r
/// (one GEMM, K = R), and FSLoRA's masked sketch update (a scatter of a rank-r/2 sub-adapter into
/// a rank-r adapter; memory-bound, so its figure is the time alone).
/// </summary>
public class AggregationBenchmarks : IFlopCount, IDisposable
{
    private const int Clients = 10;
    private Backend _backend = new CpuBackend();
    private DeviceBuffer? _stackedB, _stackedA, _weight, _subA, _subB, _loraA, _loraB;
    private float[] _rowWeights = [];
    private int[] _indices = [];

    [Params(128, 256, 512)]
    public int C { get; set; }

    [Params(4, 16, 64)]
    public int Rank { get; set; }

    /// <summary>The backend: "cpu", "ilgpu-cpu", and each GPU ILGPU finds (<see cref="BenchDevices.All"/>).</summary>
    [ParamsSource(nameof(Devices))]
    public string Device { get; set; } = "cpu";

    public static IEnumerable<string> Devices => BenchDevices.All;

    private int O => 3 * C;

    private int StackedRank => Clients * Rank;

    private int SubRank => Math.Max(1, Rank / 2);

    [GlobalSetup]
    public void Setup()
    {
        _backend.Dispose();
        _backend = Backends.Create(Device);
        var rng = new Random(1234);
        _stackedB = Upload(rng, O * StackedRank);
        _stackedA = Upload(rng, StackedRank * C);
        _weight = Upload(rng, O * C);
        _rowWeights = BenchData.Values(rng, StackedRank);
        _subA = Upload(rng, SubRank * C);
        _subB = Upload(rng, O * SubRank);
        _loraA = Upload(rng, Rank * C);
        _loraB = Upload(rng, O * Rank);
        var order = Enumerable.Range(0, Rank).ToArray();
        rng.Shuffle(order);
        _indices = order[..SubRank];
        CheckAgainstReference();
    }

    /// <summary>One run of each kernel against the Reference backend from the same inputs.</summary>
    private void CheckAgainstReference()
    {
        using var reference = new ReferenceBackend();
        BufferView Copy(DeviceBuffer source) => BenchData.Upload(reference, _backend.ToArray(source));
        var weight = Copy(_weight!);
        var loraA = Copy(_loraA!);
        var loraB = Copy(_loraB!);
        reference.StackedAggregation(O, C, StackedRank, Copy(_stackedB!), Copy(_stackedA!), _rowWeights, weight);
        reference.MaskedSketchUpdate(C, O, Rank, _indices, 0.5f, Copy(_subA!), Copy(_subB!), loraA, loraB);
        var before = (_backend.ToArray(_weight!), _backend.ToArray(_loraA!), _backend.ToArray(_loraB!));
        StackedAggregation();
        MaskedSketchUpdate();
        var tolerance = 1e-4f * MathF.Sqrt(StackedRank + 1);
        BenchData.AssertClose("stacked aggregation", reference.ToArray(weight), _backend.ToArray(_weight!), tolerance, tolerance);
        BenchData.AssertClose("masked sketch update A", reference.ToArray(loraA), _backend.ToArray(_loraA!), 1e-6f, 1e-6f);
        BenchData.AssertClose("masked sketch update B", reference.ToArray(loraB), _backend.ToArray(_loraB!), 1e-6f, 1e-6f);
        _backend.Upload(before.Item1, _weight!);
        _backend.Upload(before.Item2, _loraA!);
        _backend.Upload(before.Item3, _loraB!);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _backend.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark]
    public void StackedAggregation()
    {
        _backend.StackedAggregation(O, C, StackedRank, _stackedB!, _stackedA!, _rowWeights, _weight!);
        _backend.Synchronize();
    }

    [Benchmark]
    public void MaskedSketchUpdate()
    {
        _backend.MaskedSketchUpdate(C, O, Rank, _indices, 0.5f, _subA!, _subB!, _loraA!, _loraB!);
        _backend.Synchronize();
    }

    /// <summary>GEMM FLOPs of the aggregation; none counted for the memory-bound sketch update.</summary>
    public double Flops(string method) => method == nameof(StackedAggregation) ? 2.0 * O * C * StackedRank : double.NaN;

    private DeviceBuffer Upload(Random rng, int length) => BenchData.Upload(_backend, BenchData.Values(rng, length));
}
