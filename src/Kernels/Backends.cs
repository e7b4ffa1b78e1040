using System.Globalization;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Ilgpu;
using FedLora.Kernels.OpenCl;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels;

/// <summary>Creates a backend from its command-line name (the <c>--device</c> option).</summary>
public static class Backends
{
    /// <summary>The accepted specs, for help texts and error messages.</summary>
    public const string Choices =
        "'cpu' (managed SIMD, the default), 'reference' (naive scalar, for tests), 'opencl' (the first OpenCL GPU, "
        + "else the first OpenCL device) or 'opencl:P:D' (device D of platform P, as 'fedlora devices' lists them); "
        + "'ilgpu-cpu' (ILGPU's CPU accelerator, for correctness), 'cuda' or 'cuda:N' (ILGPU on an NVIDIA GPU)";

    /// <summary>
    /// Parses <paramref name="spec"/>: "cpu" | "reference" | "opencl" | "opencl:P:D" (case-insensitive).
    /// </summary>
    /// <exception cref="ArgumentException">The spec is none of the accepted forms; the message lists them.</exception>
    /// <exception cref="OpenClException">An OpenCL spec names a device that is absent, or no OpenCL runtime is installed.</exception>
    public static Backend Create(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var text = spec.Trim().ToLowerInvariant();
        switch (text)
        {
            case "cpu":
                return new CpuBackend();
            case "reference":
                return new ReferenceBackend();
            case "opencl":
                return OpenClBackend.Create();
            case IlgpuDevices.CpuSpec or "cuda":
                return IlgpuBackend.Create(text);
        }
        if (text.StartsWith("cuda:", StringComparison.Ordinal)) return IlgpuBackend.Create(text);
        var parts = text.Split(':');
        if (parts.Length == 3 && parts[0] == "opencl"
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var platform)
            && int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var device))
        {
            return OpenClBackend.Create(platform, device);
        }
        throw new ArgumentException($"unknown device '{spec}'; valid choices: {Choices}", nameof(spec));
    }
}
