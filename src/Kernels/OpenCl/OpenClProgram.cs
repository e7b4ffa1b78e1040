using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using static FedLora.Kernels.OpenCl.Native.NativeMethods;

namespace FedLora.Kernels.OpenCl;

/// <summary>
/// One kernel family's OpenCL C source, built once for one device and context; its kernels are
/// created once and released with it.
/// </summary>
internal sealed unsafe class OpenClProgram : IDisposable
{
    private readonly nint _device;
    private readonly List<OpenClKernel> _kernels = [];
    private readonly List<nint> _buffers = [];

    private OpenClProgram(nint handle, nint device)
    {
        Handle = handle;
        _device = device;
    }

    public nint Handle { get; private set; }

    /// <summary>
    /// Compiles <paramref name="sources"/> (concatenated in order) for <paramref name="device"/>. A failed
    /// build throws <see cref="OpenClException"/> with CL_BUILD_PROGRAM_FAILURE and the compiler's log.
    /// </summary>
    public static OpenClProgram Build(nint context, nint device, string name, string options, params ReadOnlySpan<string> sources)
    {
        var encoded = new byte[sources.Length][];
        var handles = new GCHandle[sources.Length];
        var pointers = stackalloc byte*[sources.Length];
        var lengths = stackalloc nuint[sources.Length];
        nint program;
        try
        {
            for (var i = 0; i < sources.Length; i++)
            {
                encoded[i] = Encoding.UTF8.GetBytes(sources[i]);
                handles[i] = GCHandle.Alloc(encoded[i], GCHandleType.Pinned);
                pointers[i] = (byte*)handles[i].AddrOfPinnedObject();
                lengths[i] = (nuint)encoded[i].Length;
            }
            int status;
            program = clCreateProgramWithSource(context, (uint)sources.Length, pointers, lengths, &status);
            Check(status, nameof(clCreateProgramWithSource));
        }
        finally
        {
            foreach (var handle in handles)
            {
                if (handle.IsAllocated) handle.Free();
            }
        }

        var result = new OpenClProgram(program, device);
        fixed (byte* o = Encode(options))
        {
            var status = clBuildProgram(program, 1, &device, o, 0, 0);
            if (status != CL_SUCCESS)
            {
                string log;
                try
                {
                    log = BuildLog(program, device);
                }
                catch (OpenClException e)
                {
                    log = "(no build log: " + e.Message + ")";
                }
                result.Dispose();
                throw new OpenClException(status, nameof(clBuildProgram), $"program '{name}' (options '{options}'); build log:\n{log}");
            }
        }
        return result;
    }

    /// <summary>The text of an embedded .cl resource, e.g. "Matmul" for OpenCl/Kernels/Matmul.cl.</summary>
    public static string Source(string family)
    {
        var resource = $"FedLora.Kernels.OpenCl.Kernels.{family}.cl";
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"embedded OpenCL source '{resource}' is missing from the assembly");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>Creates the kernel <paramref name="name"/>; it lives as long as the program.</summary>
    public OpenClKernel Kernel(string name)
    {
        int status;
        nint kernel;
        fixed (byte* n = Encode(name)) kernel = clCreateKernel(Handle, n, &status);
        Check(status, nameof(clCreateKernel) + " '" + name + "'");
        var result = new OpenClKernel(kernel, name,
            (int)Math.Min(KernelWorkGroupValue<nuint>(kernel, _device, CL_KERNEL_WORK_GROUP_SIZE), int.MaxValue));
        _kernels.Add(result);
        return result;
    }

    /// <summary>Ties a buffer that the family's kernels need (e.g. reduction partials) to the program's lifetime.</summary>
    public nint Own(nint memory)
    {
        _buffers.Add(memory);
        return memory;
    }

    public void Dispose()
    {
        foreach (var kernel in _kernels) _ = clReleaseKernel(kernel.Handle);
        _kernels.Clear();
        foreach (var memory in _buffers) _ = clReleaseMemObject(memory);
        _buffers.Clear();
        if (Handle != 0) _ = clReleaseProgram(Handle);
        Handle = 0;
    }
}

/// <summary>A kernel object and the work-group limits the device reported for it.</summary>
internal sealed class OpenClKernel(nint handle, string name, int maxWorkGroupSize)
{
    public nint Handle { get; } = handle;
    public string Name { get; } = name;

    /// <summary>CL_KERNEL_WORK_GROUP_SIZE: the largest work-group this kernel can run with on the device.</summary>
    public int MaxWorkGroupSize { get; } = maxWorkGroupSize;


    /// <summary>The largest power of two that is at most <paramref name="cap"/> and this kernel's limit.</summary>
    public int PowerOfTwoGroup(int cap)
    {
        var limit = Math.Max(1, Math.Min(cap, MaxWorkGroupSize));
        return 1 << (31 - System.Numerics.BitOperations.LeadingZeroCount((uint)limit));
    }
}
