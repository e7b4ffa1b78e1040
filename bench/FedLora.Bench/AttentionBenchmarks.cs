using BenchmarkDotNet.Attributes;
using FedLora.Kernels;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Reference;

namespace FedLora.Bench;

/// <summary>
/// The Cpu backend's causal attention, forward and backward, at the shapes of the two LoRA-step
/// configurations (B = 8, T = 256, hs = 32): L4-C128 (C = 128, NH = 4) and L6-C256 (C = 256, NH = 8).
/// GFLOP/s counts the multiply-adds of the causal products only (j &lt;= i): two in the forward
/// (S = q k^T, y = P v), four in the backward (dP = dy v^T, dq = dS k, dk = dS^T q, dv = P^T dy).
/// </summary>
public class AttentionBenchmarks : IFlopCount, IDisposable
{
    private Backend _backend = null!;
    private DeviceBuffer _input = null!, _attention = null!, _output = null!, _outputGrad = null!, _inputGrad = null!;

    /// <summary>"L4-C128" or "L6-C256", as in <see cref="LoraStepBenchmarks"/>.</summary>
    [Params("L4-C128", "L6-C256")]
    public string Config { get; set; } = "L4-C128";

    private int C => LoraStepBenchmarks.ModelConfig(Config).Channels;

    private int Heads => LoraStepBenchmarks.ModelConfig(Config).Heads;

    private const int B = LoraStepBenchmarks.Batch, T = LoraStepBenchmarks.Time;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1234);
        var input = BenchData.Values(rng, B * T * 3 * C, 2f);
        var outputGrad = BenchData.Values(rng, B * T * C);
        _backend = new CpuBackend();
        _input = BenchData.Upload(_backend, input);
        _outputGrad = BenchData.Upload(_backend, outputGrad);
        _attention = _backend.Allocate(B * Heads * T * T);
        _output = _backend.Allocate(B * T * C);
        _inputGrad = _backend.Allocate(B * T * 3 * C);
        Check(input, outputGrad);
    }

    [Benchmark]
    public void Forward() => _backend.AttentionForward(B, T, C, Heads, _input, _attention, _output);

    [Benchmark]
    public void Backward() => _backend.AttentionBackward(B, T, C, Heads, _input, _attention, _outputGrad, _inputGrad);

    public double Flops(string method)
    {
        // Each causal product is hs multiply-adds per (i, j <= i) entry: hs T (T + 1) / 2 per (b, h) pair.
        var product = 2.0 * B * C * T * (T + 1) / 2;
        return method == nameof(Backward) ? 4 * product : 2 * product;
    }

    /// <summary>Runs forward and backward once on the Cpu and the Reference backend and compares every output.</summary>
    private void Check(float[] input, float[] outputGrad)
    {
        using var reference = new ReferenceBackend();
        using var rInput = BenchData.Upload(reference, input);
        using var rOutputGrad = BenchData.Upload(reference, outputGrad);
        using var rAttention = reference.Allocate(B * Heads * T * T);
        using var rOutput = reference.Allocate(B * T * C);
        using var rInputGrad = reference.Allocate(B * T * 3 * C);
        reference.Fill(rInputGrad, 0);
        reference.AttentionForward(B, T, C, Heads, rInput, rAttention, rOutput);
        reference.AttentionBackward(B, T, C, Heads, rInput, rAttention, rOutputGrad, rInputGrad);

        _backend.Fill(_inputGrad, 0);
        Forward();
        Backward();
        BenchData.AssertClose("attention", reference.ToArray(rAttention), _backend.ToArray(_attention), 1e-6f, 1e-5f);
        BenchData.AssertClose("attention output", reference.ToArray(rOutput), _backend.ToArray(_output), 1e-5f, 1e-5f);
        BenchData.AssertClose("attention inputGrad", reference.ToArray(rInputGrad), _backend.ToArray(_inputGrad), 1e-5f, 1e-4f);
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _backend?.Dispose();
        GC.SuppressFinalize(this);
    }
}
