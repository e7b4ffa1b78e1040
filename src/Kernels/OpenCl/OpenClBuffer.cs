using FedLora.Kernels.OpenCl.Native;

namespace FedLora.Kernels.OpenCl;

/// <summary>Device memory of the OpenCL backend: one cl_mem of <see cref="DeviceBuffer.Length"/> floats.</summary>
internal sealed class OpenClBuffer : DeviceBuffer
{
    public OpenClBuffer(Backend backend, int length, nint handle) : base(backend, length)
    {
        Handle = handle;
    }

    ~OpenClBuffer()
    {
        // A buffer that was never disposed still returns its device memory; the status is moot here.
        _ = NativeMethods.clReleaseMemObject(Handle);
    }

    /// <summary>The cl_mem handle (never shared with another buffer).</summary>
    public nint Handle { get; }

    protected override void Release() => NativeMethods.Check(NativeMethods.clReleaseMemObject(Handle), nameof(NativeMethods.clReleaseMemObject));
}
