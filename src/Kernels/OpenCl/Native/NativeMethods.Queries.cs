using System.Text;

namespace FedLora.Kernels.OpenCl.Native;

// Typed wrappers over the clGet*Info / clGet*IDs calls: the size-query-then-fetch dance, once.
internal static unsafe partial class NativeMethods
{
    /// <summary>Every platform the ICD loader knows; empty when none is installed.</summary>
    public static nint[] PlatformIds()
    {
        uint count;
        var status = clGetPlatformIDs(0, null, &count);
        if (status == CL_PLATFORM_NOT_FOUND_KHR || (status == CL_SUCCESS && count == 0)) return [];
        Check(status, nameof(clGetPlatformIDs));
        var platforms = new nint[count];
        fixed (nint* p = platforms) Check(clGetPlatformIDs(count, p, null), nameof(clGetPlatformIDs));
        return platforms;
    }

    /// <summary>Every device of <paramref name="platform"/>; empty when it has none.</summary>
    public static nint[] DeviceIds(nint platform)
    {
        uint count;
        var status = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, null, &count);
        if (status == CL_DEVICE_NOT_FOUND || (status == CL_SUCCESS && count == 0)) return [];
        Check(status, nameof(clGetDeviceIDs));
        var devices = new nint[count];
        fixed (nint* d = devices) Check(clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, count, d, null), nameof(clGetDeviceIDs));
        return devices;
    }

    public static string PlatformString(nint platform, uint param)
    {
        nuint size;
        Check(clGetPlatformInfo(platform, param, 0, null, &size), nameof(clGetPlatformInfo));
        var bytes = new byte[(int)size];
        fixed (byte* b = bytes) Check(clGetPlatformInfo(platform, param, size, b, null), nameof(clGetPlatformInfo));
        return Decode(bytes);
    }

    public static string DeviceString(nint device, uint param)
    {
        nuint size;
        Check(clGetDeviceInfo(device, param, 0, null, &size), nameof(clGetDeviceInfo));
        var bytes = new byte[(int)size];
        fixed (byte* b = bytes) Check(clGetDeviceInfo(device, param, size, b, null), nameof(clGetDeviceInfo));
        return Decode(bytes);
    }

    /// <summary>A fixed-size device property: cl_uint, cl_ulong, size_t or cl_bitfield.</summary>
    public static T DeviceValue<T>(nint device, uint param) where T : unmanaged
    {
        T value;
        Check(clGetDeviceInfo(device, param, (nuint)sizeof(T), &value, null), nameof(clGetDeviceInfo));
        return value;
    }

    public static T KernelWorkGroupValue<T>(nint kernel, nint device, uint param) where T : unmanaged
    {
        T value;
        Check(clGetKernelWorkGroupInfo(kernel, device, param, (nuint)sizeof(T), &value, null), nameof(clGetKernelWorkGroupInfo));
        return value;
    }

    public static string BuildLog(nint program, nint device)
    {
        nuint size;
        Check(clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, null, &size), nameof(clGetProgramBuildInfo));
        var bytes = new byte[(int)size];
        fixed (byte* b = bytes)
        {
            Check(clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, b, null), nameof(clGetProgramBuildInfo));
        }
        return Decode(bytes).Trim();
    }

    /// <summary>A NUL-terminated UTF-8 copy of <paramref name="text"/> for char* arguments.</summary>
    public static byte[] Encode(string text)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(text) + 1];
        Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }

    private static string Decode(byte[] bytes)
    {
        var length = Array.IndexOf(bytes, (byte)0);
        return Encoding.UTF8.GetString(bytes, 0, length < 0 ? bytes.Length : length).Trim();
    }
}
