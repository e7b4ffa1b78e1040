using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Backends.OpenCL;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace FedLora.Kernels.Ilgpu;

/// <summary>An accelerator ILGPU can run FedLora's kernels on, with the <c>--device</c> value that selects it.</summary>
/// <param name="Spec">The <c>--device</c> value: <c>ilgpu-cpu</c>, <c>cuda:N</c> or <c>opencl:N</c>.</param>
/// <param name="Kind">CPU, Cuda or OpenCL.</param>
/// <param name="Name">The device's own name.</param>
/// <param name="MemoryBytes">Device memory.</param>
/// <param name="MaxGroupSize">The most threads one group may have.</param>
/// <param name="WarpSize">Threads that run in lock step.</param>
/// <param name="Multiprocessors">Streaming multiprocessors or compute units.</param>
public sealed record IlgpuDeviceInfo(string Spec, AcceleratorType Kind, string Name, long MemoryBytes, int MaxGroupSize, int WarpSize,
    int Multiprocessors);

/// <summary>An OpenCL device ILGPU cannot run kernels on, and why.</summary>
/// <param name="Name">The device's own name.</param>
/// <param name="Platform">Its OpenCL platform and version.</param>
/// <param name="Reason">What ILGPU needs that the device lacks.</param>
public sealed record IlgpuUnusableDevice(string Name, string Platform, string Reason);

/// <summary>Finds ILGPU accelerators and names them the way <c>--device</c> does.</summary>
public static class IlgpuDevices
{
    /// <summary>The <c>--device</c> value of ILGPU's CPU accelerator.</summary>
    public const string CpuSpec = "ilgpu-cpu";

    static IlgpuDevices()
    {
        // ILGPU imports the OpenCL ICD loader as "OpenCL", which resolves to libOpenCL.so: on Debian only
        // the -dev package has that name, the runtime has libOpenCL.so.1, so without this ILGPU sees no
        // OpenCL platform at all. Another resolver already set for ILGPU is left in place.
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, ResolveOpenCl);
        }
        catch (InvalidOperationException)
        {
        }
    }

    private static nint ResolveOpenCl(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name.Equals("OpenCL", StringComparison.OrdinalIgnoreCase) && OperatingSystem.IsLinux()
            && NativeLibrary.TryLoad("libOpenCL.so.1", assembly, searchPath, out var handle)
            ? handle
            : 0;

    /// <summary>
    /// A context with every accelerator ILGPU supports here. The CPU accelerator emulates an NVIDIA
    /// GPU (warp 32, groups of up to 1,024 threads), so GPU-shaped kernels launch on it unchanged;
    /// ILGPU's default CPU device allows only 16 threads a group.
    /// </summary>
    public static Context CreateContext() =>
        Context.Create(builder => builder.CPU(CPUDeviceKind.Nvidia).Cuda().OpenCL().EnableAlgorithms().Math(MathMode.Default));

    /// <summary>Every accelerator ILGPU can use here, CPU accelerator first.</summary>
    public static IReadOnlyList<IlgpuDeviceInfo> List()
    {
        using var context = CreateContext();
        var result = new List<IlgpuDeviceInfo> { Describe(CpuSpec, context.GetCPUDevice(0)) };
        var cuda = context.GetCudaDevices();
        for (var i = 0; i < cuda.Count; i++) result.Add(Describe(Spec("cuda", i), cuda[i]));
        var opencl = context.GetCLDevices();
        for (var i = 0; i < opencl.Count; i++) result.Add(Describe(Spec("opencl", i), opencl[i]));
        return result;
    }

    /// <summary>
    /// The OpenCL devices present that ILGPU's OpenCL backend cannot use (it needs OpenCL C 2.0 with the
    /// generic address space), each with the reason; empty without an OpenCL runtime.
    /// </summary>
    public static IReadOnlyList<IlgpuUnusableDevice> UnusableOpenClDevices()
    {
        using var everything = Context.Create(builder => builder.OpenCL(_ => true));
        using var usable = CreateContext();
        var usableIds = new HashSet<nint>();
        foreach (var device in usable.GetCLDevices()) usableIds.Add(device.DeviceId);
        var result = new List<IlgpuUnusableDevice>();
        foreach (var device in everything.GetCLDevices())
        {
            if (usableIds.Contains(device.DeviceId)) continue;
            var lacks = new List<string>();
            if (device.CVersion < CLCVersion.CL20) lacks.Add($"it offers OpenCL C {device.CVersion.Major}.{device.CVersion.Minor}, ILGPU needs 2.0");
            if (!device.Capabilities.GenericAddressSpace) lacks.Add("it has no generic address space");
            if (lacks.Count == 0) lacks.Add("ILGPU's OpenCL backend does not accept it");
            result.Add(new IlgpuUnusableDevice(device.Name, $"{device.PlatformName}, {device.PlatformVersion}", string.Join("; ", lacks)));
        }
        return result;
    }

    /// <summary>
    /// Resolves <paramref name="spec"/> (<c>ilgpu-cpu</c>, <c>cuda</c>, <c>cuda:N</c>, <c>opencl</c>,
    /// <c>opencl:N</c>) in <paramref name="context"/>, returning the device and its canonical name.
    /// </summary>
    /// <exception cref="IlgpuDeviceException">The spec names no device here.</exception>
    internal static (Device Device, string Name) Find(Context context, string spec)
    {
        var text = spec.Trim().ToLowerInvariant();
        if (text == CpuSpec) return (context.GetCPUDevice(0), CpuSpec);
        var (kind, index) = ParseIndexed(text)
            ?? throw new IlgpuDeviceException($"unknown ILGPU device '{spec}'; valid forms: 'ilgpu-cpu', 'cuda', 'cuda:N', 'opencl', 'opencl:N'");
        IReadOnlyList<Device> devices = kind == "cuda" ? [.. context.GetCudaDevices()] : [.. context.GetCLDevices()];
        if (index < devices.Count) return (devices[index], Spec(kind, index));
        var what = kind == "cuda"
            ? "no CUDA device: ILGPU needs an NVIDIA GPU and its driver (libcuda)"
            : "no OpenCL device that ILGPU can use: it needs OpenCL C 2.0 with the generic address space"
                + string.Concat(UnusableOpenClDevices().Select(unusable => $"; {unusable.Name} is here, but {unusable.Reason}"));
        throw new IlgpuDeviceException(devices.Count == 0
            ? $"device '{spec}': {what}; run 'fedlora devices' to see what is here, or use --device cpu"
            : $"device '{spec}': there are only {devices.Count} {kind} device(s) (indices 0-{devices.Count - 1}); run 'fedlora devices'");
    }

    /// <summary>
    /// Whether <paramref name="spec"/> (trimmed, lower case) has the form of an ILGPU device: <c>ilgpu-cpu</c>,
    /// <c>cuda</c>, <c>cuda:N</c>, <c>opencl</c> or <c>opencl:N</c>, whether or not that device exists here.
    /// </summary>
    public static bool IsSpec(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return spec == CpuSpec || ParseIndexed(spec) is not null;
    }

    private static (string Kind, int Index)? ParseIndexed(string text)
    {
        foreach (var kind in new[] { "cuda", "opencl" })
        {
            if (text == kind) return (kind, 0);
            if (text.StartsWith(kind + ":", StringComparison.Ordinal)
                && int.TryParse(text.AsSpan(kind.Length + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var index))
            {
                return (kind, index);
            }
        }
        return null;
    }

    private static string Spec(string kind, int index) => string.Create(CultureInfo.InvariantCulture, $"{kind}:{index}");

    private static IlgpuDeviceInfo Describe(string spec, Device device) =>
        new(spec, device.AcceleratorType, device.Name, device.MemorySize, device.MaxNumThreadsPerGroup, device.WarpSize, device.NumMultiprocessors);
}
