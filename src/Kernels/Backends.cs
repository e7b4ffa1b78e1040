using FedLora.Kernels.Cpu;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels;

/// <summary>Creates a backend from its command-line name.</summary>
public static class Backends
{
    /// <summary>"cpu" (the default) or "reference"; unknown names throw with the valid choices.</summary>
    public static Backend Create(string spec) =>
        spec?.Trim().ToLowerInvariant() switch
        {
            "cpu" => new CpuBackend(),
            "reference" => new ReferenceBackend(),
            _ => throw new ArgumentException($"unknown device '{spec}': choose cpu or reference", nameof(spec)),
        };
}
