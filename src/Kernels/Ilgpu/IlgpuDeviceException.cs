using ILGPU.Runtime;

namespace FedLora.Kernels.Ilgpu;

/// <summary>
/// An ILGPU device is missing, or an op failed on one (a kernel that did not compile or launch, an
/// out-of-memory device, a lost driver). The message names the op, the device and what to do.
/// </summary>
public sealed class IlgpuDeviceException : Exception
{
    /// <summary>Creates the exception with its message.</summary>
    public IlgpuDeviceException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with its message and cause.</summary>
    public IlgpuDeviceException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with no message (for serializers).</summary>
    public IlgpuDeviceException()
    {
    }

    internal static IlgpuDeviceException For(string op, string device, Accelerator accelerator, Exception cause)
    {
        var advice = cause is OutOfMemoryException || cause.Message.Contains("memory", StringComparison.OrdinalIgnoreCase)
            ? $"the device has {accelerator.MemorySize >> 20} MiB: use a smaller --batch or context, or --device cpu"
            : "run 'fedlora devices' to check the device and its driver, or use --device cpu";
        return new IlgpuDeviceException($"{op} failed on {device} ({accelerator.Name}): {cause.Message}; {advice}", cause);
    }
}
