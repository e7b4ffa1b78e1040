using FedLora.Kernels.Cpu;
using FedLora.Kernels.Ilgpu;
using FedLora.Kernels.Reference;
using FedLora.Kernels.Tests.Ilgpu;

namespace FedLora.Kernels.Tests;

/// <summary>
/// The backends the conformance suite runs against. Every fast backend joins this list; each test
/// is written once and compares the backend with <see cref="ReferenceBackend"/>.
/// </summary>
public static class TestBackends
{
    private static readonly Dictionary<string, Backend> Cache = [];

    /// <summary>
    /// Names of the backends under test: the Cpu backend and ILGPU's CPU accelerator on every machine, and
    /// the device FEDLORA_TEST_DEVICE names (e.g. "cuda", as bench/gpu-check.sh sets it).
    /// </summary>
    public static IReadOnlyList<string> Names { get; } =
        Environment.GetEnvironmentVariable("FEDLORA_TEST_DEVICE") is { Length: > 0 } extra ? ["cpu", "ilgpu-cpu", extra] : ["cpu", "ilgpu-cpu"];

    /// <summary>One shared instance per backend name (backends are thread-safe for separate buffers).</summary>
    public static Backend Get(string name)
    {
        lock (Cache)
        {
            if (!Cache.TryGetValue(name, out var backend))
            {
                backend = name switch
                {
                    "cpu" => new CpuBackend(),
                    "reference" => new ReferenceBackend(),
                    "ilgpu-cpu" => IlgpuBackend.Create("ilgpu-cpu"),
                    IlgpuRowGroupTests.Backend => IlgpuRowGroupTests.Create(),
                    _ => Backends.Create(name),
                };
                Cache[name] = backend;
            }
            return backend;
        }
    }

    /// <summary>
    /// The most multiply-adds (N C O) of one product the shape sweeps give ILGPU's CPU accelerator, which
    /// emulates GPU threads at about 10 million multiply-adds a second. The sweeps' larger shapes exercise
    /// the Cpu GEMM's blocking (K blocks, column chunks, packing); on ilgpu-cpu every odd shape runs and
    /// these are left out, which keeps its share of the suite near two minutes.
    /// </summary>
    public const long IlgpuCpuLargestProduct = 1L << 22;

    /// <summary>Whether a shape sweep gives <paramref name="backend"/> a product of <paramref name="multiplyAdds"/>.</summary>
    public static bool Sweeps(string backend, long multiplyAdds) => backend != "ilgpu-cpu" || multiplyAdds <= IlgpuCpuLargestProduct;

    /// <summary>Theory data: the backends under test whose sweeps take a product of <paramref name="multiplyAdds"/>.</summary>
    public static TheoryData<string> ForProduct(long multiplyAdds)
    {
        var data = new TheoryData<string>();
        foreach (var name in Names.Where(name => Sweeps(name, multiplyAdds))) data.Add(name);
        return data;
    }

    /// <summary>Theory data: one row per backend under test.</summary>
    public static TheoryData<string> All()
    {
        var data = new TheoryData<string>();
        foreach (var name in Names) data.Add(name);
        return data;
    }
}
