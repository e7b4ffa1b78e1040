using FedLora.Kernels.Cpu;
using FedLora.Kernels.Ilgpu;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels;

/// <summary>Creates a backend from its command-line name (the <c>--device</c> option).</summary>
public static class Backends
{
    /// <summary>The accepted specs, for help texts and error messages.</summary>
    public const string Choices =
        "'cpu' (managed SIMD, the default), 'reference' (naive scalar, for tests), 'ilgpu-cpu' (ILGPU's CPU accelerator, "
        + "for correctness), 'cuda' or 'cuda:N' (ILGPU on an NVIDIA GPU), 'opencl' or 'opencl:N' (ILGPU on an OpenCL 2.0 device), "
        + "N as 'fedlora devices' lists them";

    /// <summary>
    /// Parses <paramref name="spec"/>: "cpu" | "reference" | "ilgpu-cpu" | "cuda" | "cuda:N" | "opencl" | "opencl:N"
    /// (case-insensitive).
    /// </summary>
    /// <exception cref="ArgumentException">The spec is none of the accepted forms; the message lists them.</exception>
    /// <exception cref="IlgpuDeviceException">An ILGPU spec names a device that is absent, or its driver is missing; the message says what to do.</exception>
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
        }
        if (IlgpuDevices.IsSpec(text)) return IlgpuBackend.Create(spec);
        throw new ArgumentException($"unknown device '{spec}'; valid choices: {Choices}", nameof(spec));
    }
}
