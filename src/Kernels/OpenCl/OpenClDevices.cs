using System.Globalization;
using static FedLora.Kernels.OpenCl.Native.NativeMethods;

namespace FedLora.Kernels.OpenCl;

/// <summary>One OpenCL device as the ICD loader reports it, addressed by platform and device index.</summary>
/// <param name="PlatformIndex">Index of the platform in the loader's list.</param>
/// <param name="DeviceIndex">Index of the device within its platform.</param>
/// <param name="Platform">Platform name, e.g. "Portable Computing Language".</param>
/// <param name="Name">Device name.</param>
/// <param name="Vendor">Device vendor.</param>
/// <param name="Version">Device OpenCL version string.</param>
/// <param name="OpenClCVersion">Highest OpenCL C version the device compiles.</param>
/// <param name="Type">"GPU", "CPU", "accelerator" or "other".</param>
/// <param name="GlobalMemoryBytes">Global memory size in bytes.</param>
/// <param name="ComputeUnits">Number of compute units.</param>
/// <param name="MaxWorkGroupSize">Largest work-group the device runs.</param>
public sealed record OpenClDeviceInfo(int PlatformIndex, int DeviceIndex, string Platform, string Name, string Vendor,
    string Version, string OpenClCVersion, string Type, long GlobalMemoryBytes, int ComputeUnits, int MaxWorkGroupSize)
{
    /// <summary>The backend spec that selects this device: "opencl:P:D".</summary>
    public string Spec => string.Create(CultureInfo.InvariantCulture, $"opencl:{PlatformIndex}:{DeviceIndex}");

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Spec} {Name} ({Type}, {Vendor}; {Platform}; {Version}; {ComputeUnits} CU, {GlobalMemoryBytes >> 20} MiB, work-group <= {MaxWorkGroupSize})");
}

/// <summary>
/// Device discovery: which OpenCL devices this machine has. Throws <see cref="OpenClException"/> with
/// the packages to install when no OpenCL runtime is present, never a raw DllNotFoundException.
/// </summary>
public static class OpenClDevices
{
    /// <summary>
    /// Every device of every platform, in (platform, device) index order. Empty when the loader is
    /// installed but has no platform or device; throws <see cref="OpenClException"/> when the loader
    /// itself (libOpenCL.so.1) is missing.
    /// </summary>
    public static IReadOnlyList<OpenClDeviceInfo> List()
    {
        RequireLibrary();
        var result = new List<OpenClDeviceInfo>();
        var platforms = PlatformIds();
        for (var p = 0; p < platforms.Length; p++)
        {
            var devices = DeviceIds(platforms[p]);
            for (var d = 0; d < devices.Length; d++) result.Add(Describe(platforms[p], devices[d], p, d));
        }
        return result;
    }

    /// <summary>True when at least one OpenCL device can be used here; never throws.</summary>
    public static bool IsAvailable(out string reason)
    {
        try
        {
            if (List().Count > 0)
            {
                reason = "";
                return true;
            }
            reason = "the OpenCL loader found no platform with a device; " + InstallHint;
        }
        catch (OpenClException e)
        {
            reason = e.Message;
        }
        return false;
    }

    /// <summary>The device a bare "opencl" spec selects: the first GPU, else the first device of any kind.</summary>
    public static OpenClDeviceInfo Default()
    {
        var devices = List();
        if (devices.Count == 0) throw new OpenClException("no OpenCL platform with a device was found; " + InstallHint);
        return devices.FirstOrDefault(d => d.Type == "GPU") ?? devices[0];
    }

    /// <summary>Finds the native handles of device (platformIndex, deviceIndex), with a message listing the devices when absent.</summary>
    internal static (nint Platform, nint Device, OpenClDeviceInfo Info) Open(int platformIndex, int deviceIndex)
    {
        RequireLibrary();
        var platforms = PlatformIds();
        if (platforms.Length == 0) throw new OpenClException("no OpenCL platform was found; " + InstallHint);
        if ((uint)platformIndex < (uint)platforms.Length)
        {
            var devices = DeviceIds(platforms[platformIndex]);
            if ((uint)deviceIndex < (uint)devices.Length)
            {
                var platform = platforms[platformIndex];
                var device = devices[deviceIndex];
                return (platform, device, Describe(platform, device, platformIndex, deviceIndex));
            }
        }
        var available = List();
        var listing = available.Count == 0 ? "none; " + InstallHint : string.Join("; ", available.Select(d => d.Spec + " " + d.Name));
        throw new OpenClException(string.Create(CultureInfo.InvariantCulture,
            $"there is no OpenCL device opencl:{platformIndex}:{deviceIndex}; available: {listing}"));
    }

    private static void RequireLibrary()
    {
        if (!IsLibraryPresent())
        {
            throw new OpenClException($"the OpenCL ICD loader ({Library}) is not installed; " + InstallHint);
        }
    }

    private static OpenClDeviceInfo Describe(nint platform, nint device, int platformIndex, int deviceIndex)
    {
        var type = DeviceValue<ulong>(device, CL_DEVICE_TYPE);
        var typeName = (type & CL_DEVICE_TYPE_GPU) != 0 ? "GPU"
            : (type & CL_DEVICE_TYPE_CPU) != 0 ? "CPU"
            : (type & CL_DEVICE_TYPE_ACCELERATOR) != 0 ? "accelerator"
            : "other";
        return new OpenClDeviceInfo(
            platformIndex, deviceIndex,
            PlatformString(platform, CL_PLATFORM_NAME),
            DeviceString(device, CL_DEVICE_NAME),
            DeviceString(device, CL_DEVICE_VENDOR),
            DeviceString(device, CL_DEVICE_VERSION),
            DeviceString(device, CL_DEVICE_OPENCL_C_VERSION),
            typeName,
            (long)DeviceValue<ulong>(device, CL_DEVICE_GLOBAL_MEM_SIZE),
            (int)DeviceValue<uint>(device, CL_DEVICE_MAX_COMPUTE_UNITS),
            (int)Math.Min(DeviceValue<nuint>(device, CL_DEVICE_MAX_WORK_GROUP_SIZE), int.MaxValue));
    }
}
