using FedLora.Kernels.Ilgpu;
using ILGPU.Runtime;

namespace FedLora.Bench;

/// <summary>The <c>Device</c> values the kernel benchmarks run on here.</summary>
public static class BenchDevices
{
    /// <summary>
    /// "cpu", "ilgpu-cpu" (ILGPU's CPU accelerator: a correctness target, orders of magnitude slower; filter it
    /// out for figures), and every CUDA or OpenCL device ILGPU finds (cuda:N, opencl:N); or the comma-separated
    /// list FEDLORA_BENCH_DEVICES gives (bench/gpu-check.sh sets "cpu,cuda:0").
    /// </summary>
    public static IEnumerable<string> All =>
        Environment.GetEnvironmentVariable("FEDLORA_BENCH_DEVICES") is { Length: > 0 } chosen
            ? chosen.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            : ["cpu", IlgpuDevices.CpuSpec, .. IlgpuDevices.List().Where(device => device.Kind != AcceleratorType.CPU).Select(device => device.Spec)];
}
