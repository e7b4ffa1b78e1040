using FedLora.Kernels.OpenCl;

namespace FedLora.Kernels.Tests.OpenCl;

/// <summary>
/// The default OpenCL device under each tuning the backend has (see <see cref="OpenClTuning"/>), so
/// that every kernel variant is tested whatever device the machine has: "gpu" (the tiled GEMM, 256-item
/// row reductions), "gpu-small" (4x4-item GEMM tiles and 16-item rows, as on a device with small
/// work-groups) and "cpu" (the register-blocked GEMM, one item per row).
/// </summary>
public static class OpenClStyles
{
    private static readonly Dictionary<string, Lazy<OpenClBackend>> Backends = new()
    {
        ["gpu"] = new(() => Open(OpenClTuning.Gpu)),
        ["gpu-small"] = new(() => Open(new OpenClTuning(GemmKernel.Tiled, 4, 16))),
        ["cpu"] = new(() => Open(OpenClTuning.Cpu)),
    };

    public static IReadOnlyCollection<string> Names => Backends.Keys;

    /// <summary>One shared backend per style, created on first use.</summary>
    public static Backend Get(string style) => Backends[style].Value;

    public static TheoryData<string> All()
    {
        var data = new TheoryData<string>();
        foreach (var name in Names) data.Add(name);
        return data;
    }

    private static OpenClBackend Open(OpenClTuning tuning)
    {
        var device = OpenClDevices.Default();
        return OpenClBackend.Create(device.PlatformIndex, device.DeviceIndex, tuning);
    }
}
