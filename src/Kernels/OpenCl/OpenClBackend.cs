using System.Globalization;
using static FedLora.Kernels.OpenCl.Native.NativeMethods;

namespace FedLora.Kernels.OpenCl;

/// <summary>
/// Runs FedLora's op set as OpenCL C 1.2 kernels on one OpenCL device: PoCL on a CPU, or any GPU with
/// an OpenCL driver. Each kernel family (Matmul, LayerNorm, Gelu, Residual, Attention, Embedding,
/// CrossEntropy, Optimizers, Vector) is one embedded .cl source, built once per backend on first use;
/// its kernels are created once.
/// </summary>
/// <remarks>
/// <para>Ops are enqueued on one in-order command queue and return before the device finishes;
/// <see cref="Backend.Download"/> and <see cref="Backend.SumOfSquares"/> wait for their result, and
/// <see cref="Backend.Synchronize"/> waits for everything (clFinish).</para>
/// <para>One backend may be called from several threads: each op holds the backend's lock while it
/// sets kernel arguments and enqueues, because kernel objects and scratch buffers are shared.</para>
/// <para>Host-side inputs (token ids, targets, rank indices, row weights) are copied into scratch
/// buffers that grow on demand and are reused. Views are passed to kernels as (buffer, offset) pairs.</para>
/// </remarks>
public sealed partial class OpenClBackend : Backend
{
    /// <summary>Cap on the work-group size of row reductions and element-wise kernels.</summary>
    private const int GroupCap = 256;

    private readonly Lock _gate = new();
    private readonly nint _device;
    private readonly nint _context;
    private readonly nint _queue;
    private readonly List<OpenClProgram> _programs = [];
    private readonly Scratch _floatScratch;
    private readonly Scratch _intScratch;
    private readonly Scratch _gemmScratch;
    private readonly int _preferredFloatWidth;
    private readonly nint _placeholder;
    private readonly bool _hasFp64;
    private readonly string _buildOptions;
    private bool _disposed;

    private unsafe OpenClBackend(nint platform, nint device, OpenClDeviceInfo info, OpenClTuning? tuning)
    {
        Device = info;
        _device = device;
        var properties = stackalloc nint[] { CL_CONTEXT_PLATFORM, platform, 0 };
        int status;
        _context = clCreateContext(properties, 1, &device, 0, 0, &status);
        Check(status, nameof(clCreateContext));
        _queue = clCreateCommandQueue(_context, device, 0, &status);
        if (status != CL_SUCCESS)
        {
            _ = clReleaseContext(_context);
            Check(status, nameof(clCreateCommandQueue));
        }
        try
        {
            MaxAllocationBytes = (long)DeviceValue<ulong>(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
            _preferredFloatWidth = (int)DeviceValue<uint>(device, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT);
            _hasFp64 = DeviceString(device, CL_DEVICE_EXTENSIONS).Contains("cl_khr_fp64", StringComparison.Ordinal);
            // Correctly rounded x/y and sqrt where the device offers them: the reference's precision, and on
            // PoCL also speed, as its default-precision division is not vectorised (AdamW over 786K floats:
            // 9-11 ms without the option, 1.2 ms with it). The option fails the build on devices without it.
            var correctlyRounded = (DeviceValue<ulong>(device, CL_DEVICE_SINGLE_FP_CONFIG) & CL_FP_CORRECTLY_ROUNDED_DIVIDE_SQRT) != 0;
            _buildOptions = correctlyRounded ? "-cl-std=CL1.2 -cl-fp32-correctly-rounded-divide-sqrt " : "-cl-std=CL1.2 ";
            // Bound to kernel parameters whose operand is absent (a null bias, mask or unused source).
            _placeholder = CreateMemory(_context, sizeof(float));
        }
        catch
        {
            _ = clReleaseCommandQueue(_queue);
            _ = clReleaseContext(_context);
            throw;
        }
        _floatScratch = new Scratch(_context, sizeof(float), MaxAllocationBytes);
        _intScratch = new Scratch(_context, sizeof(int), MaxAllocationBytes);
        _gemmScratch = new Scratch(_context, sizeof(float), MaxAllocationBytes);
        Tuning = tuning ?? OpenClTuning.For(info.Type);
    }

    /// <summary>Opens the default device: the first GPU, else the first OpenCL device of any kind.</summary>
    /// <exception cref="OpenClException">No OpenCL runtime or device is installed (the message says what to install).</exception>
    public static OpenClBackend Create()
    {
        var device = OpenClDevices.Default();
        return Create(device.PlatformIndex, device.DeviceIndex);
    }

    /// <summary>Opens device <paramref name="deviceIndex"/> of platform <paramref name="platformIndex"/> (see <see cref="OpenClDevices.List"/>).</summary>
    /// <exception cref="OpenClException">The device does not exist, or no OpenCL runtime is installed.</exception>
    public static OpenClBackend Create(int platformIndex, int deviceIndex)
    {
        var (platform, device, info) = OpenClDevices.Open(platformIndex, deviceIndex);
        return new OpenClBackend(platform, device, info, null);
    }

    /// <summary>Opens a device with a chosen <see cref="OpenClTuning"/>, so that tests and benchmarks run every kernel variant on any device.</summary>
    internal static OpenClBackend Create(int platformIndex, int deviceIndex, OpenClTuning tuning)
    {
        var (platform, device, info) = OpenClDevices.Open(platformIndex, deviceIndex);
        return new OpenClBackend(platform, device, info, tuning);
    }

    /// <summary>The device this backend runs on.</summary>
    public OpenClDeviceInfo Device { get; }

    /// <summary>How work maps onto the device: chosen from its type unless a test or benchmark says otherwise.</summary>
    internal OpenClTuning Tuning { get; }

    /// <inheritdoc/>
    public override string Name => Device.Spec;

    /// <inheritdoc/>
    public override string Description => string.Create(CultureInfo.InvariantCulture,
        $"OpenCL C on {Device.Name} ({Device.Type}, {Device.Platform}, {Device.Version}, {Device.ComputeUnits} compute units); {GemmDescription}");

    /// <summary>The cl_context (for tests that build their own programs).</summary>
    internal nint ContextHandle => _context;

    /// <summary>The cl_device_id.</summary>
    internal nint DeviceHandle => _device;

    /// <summary>CL_DEVICE_MAX_MEM_ALLOC_SIZE: the largest single buffer the device allocates.</summary>
    internal long MaxAllocationBytes { get; }

    /// <inheritdoc/>
    public override void Synchronize()
    {
        lock (_gate) Check(clFinish(Queue), nameof(clFinish));
    }

    // ---------------------------------------------------------------- memory

    /// <inheritdoc/>
    protected override unsafe DeviceBuffer AllocateCore(int length)
    {
        lock (_gate)
        {
            var queue = Queue;
            // A zero-length view still needs a valid cl_mem (clCreateBuffer rejects size 0).
            var bytes = Math.Max(1L, length) * sizeof(float);
            if (bytes > MaxAllocationBytes)
            {
                throw new OpenClException(string.Create(CultureInfo.InvariantCulture,
                    $"a buffer of {length} floats ({bytes} bytes) exceeds the device's CL_DEVICE_MAX_MEM_ALLOC_SIZE of {MaxAllocationBytes} bytes"));
            }
            var memory = CreateMemory(_context, bytes);
            var zero = 0f;
            var status = clEnqueueFillBuffer(queue, memory, &zero, sizeof(float), 0, (nuint)bytes, 0, null, null);
            if (status != CL_SUCCESS)
            {
                _ = clReleaseMemObject(memory);
                Check(status, nameof(clEnqueueFillBuffer));
            }
            return new OpenClBuffer(this, length, memory);
        }
    }

    /// <inheritdoc/>
    protected override unsafe void UploadCore(ReadOnlySpan<float> source, BufferView destination)
    {
        if (source.IsEmpty) return;
        lock (_gate)
        {
            fixed (float* s = source)
            {
                Check(clEnqueueWriteBuffer(Queue, Memory(destination), CL_TRUE, Bytes(destination.Offset), Bytes(source.Length), s, 0, null, null),
                    nameof(clEnqueueWriteBuffer));
            }
        }
    }

    /// <inheritdoc/>
    protected override unsafe void DownloadCore(BufferView source, Span<float> destination)
    {
        if (destination.IsEmpty) return;
        lock (_gate)
        {
            fixed (float* d = destination)
            {
                Check(clEnqueueReadBuffer(Queue, Memory(source), CL_TRUE, Bytes(source.Offset), Bytes(destination.Length), d, 0, null, null),
                    nameof(clEnqueueReadBuffer));
            }
        }
    }

    // ---------------------------------------------------------------- programs and launches

    /// <summary>Builds a kernel family's program (Common.cl, then the family's sources) and keeps it for the backend's life.</summary>
    private OpenClProgram BuildProgram(string family, string options, params ReadOnlySpan<string> sources)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var all = new string[sources.Length + 1];
        all[0] = OpenClProgram.Source("Common");
        sources.CopyTo(all.AsSpan(1));
        var program = OpenClProgram.Build(_context, _device, family, _buildOptions + options, all);
        _programs.Add(program);
        return program;
    }

    private OpenClProgram BuildProgram(string family) => BuildProgram(family, "", OpenClProgram.Source(family));

    /// <summary>Element-wise launch: at least <paramref name="count"/> work-items in 1D; the kernel ignores the excess.</summary>
    private unsafe void Run(OpenClKernel kernel, int count, params ReadOnlySpan<KernelArg> args)
    {
        if (count <= 0) return;
        var local = (nuint)kernel.PowerOfTwoGroup(GroupCap);
        var global = ((nuint)count + local - 1) / local * local;
        Enqueue(kernel, 1, &global, &local, args);
    }

    /// <summary>One work-group of <paramref name="groupSize"/> work-items per row, for kernels that reduce a row in local memory.</summary>
    private unsafe void RunGroups(OpenClKernel kernel, int groups, int groupSize, params ReadOnlySpan<KernelArg> args)
    {
        if (groups <= 0) return;
        var local = (nuint)groupSize;
        var global = (nuint)groups * local;
        Enqueue(kernel, 1, &global, &local, args);
    }

    /// <summary>The work-group size for <see cref="RunGroups"/>: a power of two the kernel accepts, up to the tuning's cap.</summary>
    private int RowGroupSize(OpenClKernel kernel) => kernel.PowerOfTwoGroup(Tuning.RowGroupCap);

    private unsafe void Enqueue(OpenClKernel kernel, uint dimensions, nuint* global, nuint* local, ReadOnlySpan<KernelArg> args)
    {
        var queue = Queue;
        uint index = 0;
        foreach (var arg in args) index = arg.Set(kernel, index);
        var status = clEnqueueNDRangeKernel(queue, kernel.Handle, dimensions, null, global, local, 0, null, null);
        if (status != CL_SUCCESS) Check(status, $"{nameof(clEnqueueNDRangeKernel)} ({kernel.Name})");
    }

    /// <summary>The command queue; every use goes through here so that a disposed backend throws instead of crashing.</summary>
    private nint Queue
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _queue;
        }
    }

    /// <summary>The argument bound for an absent optional operand: a valid buffer the kernel never reads.</summary>
    private KernelArg Placeholder => KernelArg.Memory(_placeholder, 0);

    private KernelArg Optional(BufferView? view) => view is { } v ? v : Placeholder;

    /// <summary>Copies host ints into the int scratch at element 0 and returns the kernel argument for them.</summary>
    private unsafe KernelArg UploadInts(ReadOnlySpan<int> values)
    {
        var memory = _intScratch.Reserve(values.Length);
        if (!values.IsEmpty)
        {
            fixed (int* v = values)
            {
                Check(clEnqueueWriteBuffer(Queue, memory, CL_TRUE, 0, (nuint)values.Length * sizeof(int), v, 0, null, null),
                    nameof(clEnqueueWriteBuffer));
            }
        }
        return KernelArg.Memory(memory, 0);
    }

    /// <summary>Copies host floats into the float scratch at <paramref name="offset"/> (already reserved).</summary>
    private unsafe void UploadFloats(ReadOnlySpan<float> values, int offset)
    {
        if (values.IsEmpty) return;
        fixed (float* v = values)
        {
            Check(clEnqueueWriteBuffer(Queue, _floatScratch.Handle, CL_TRUE, Bytes(offset), Bytes(values.Length), v, 0, null, null),
                nameof(clEnqueueWriteBuffer));
        }
    }

    private static nint Memory(BufferView view) => ((OpenClBuffer)view.Buffer).Handle;

    private static nuint Bytes(int floats) => (nuint)floats * sizeof(float);

    private static unsafe nint CreateMemory(nint context, long bytes)
    {
        int status;
        var memory = clCreateBuffer(context, CL_MEM_READ_WRITE, (nuint)bytes, null, &status);
        Check(status, nameof(clCreateBuffer));
        return memory;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            // Cleanup ignores statuses: nothing can be done about a failed release, and throwing here would hide the caller's error.
            _ = clFinish(_queue);
            foreach (var program in _programs) program.Dispose();
            _programs.Clear();
            _floatScratch.Dispose();
            _intScratch.Dispose();
            _gemmScratch.Dispose();
            _ = clReleaseMemObject(_placeholder);
            _ = clReleaseCommandQueue(_queue);
            _ = clReleaseContext(_context);
        }
        base.Dispose(disposing);
    }

    /// <summary>
    /// A device buffer reused across ops for temporaries and host-side inputs; it only grows. An op
    /// reserves everything it needs once, before its first launch, then addresses parts by offset.
    /// </summary>
    private sealed class Scratch(nint context, int elementBytes, long maxBytes) : IDisposable
    {
        private long _capacity;
        private bool _disposed;

        public nint Handle { get; private set; }

        /// <summary>Ensures room for <paramref name="elements"/> elements; the previous contents are not kept.</summary>
        public nint Reserve(long elements)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (Handle != 0 && elements <= _capacity) return Handle;
            // In-order queue: commands already enqueued on the old buffer keep it alive until they finish.
            if (Handle != 0) _ = clReleaseMemObject(Handle);
            Handle = 0;
            var capacity = Math.Max(elements, Math.Min(Math.Max(2 * _capacity, 1024), maxBytes / elementBytes));
            Handle = CreateMemory(context, capacity * elementBytes);
            _capacity = capacity;
            return Handle;
        }

        public void Dispose()
        {
            if (Handle != 0) _ = clReleaseMemObject(Handle);
            Handle = 0;
            _disposed = true;
        }
    }
}

/// <summary>Which GEMM kernel an <see cref="OpenClBackend"/> runs.</summary>
internal enum GemmKernel
{
    /// <summary>Work-group tiles staged in local memory, coalesced loads (MatmulGemm.cl): for GPUs.</summary>
    Tiled,

    /// <summary>One register-blocked vector micro-kernel per work-item, no local memory (MatmulGemmVector.cl): for CPU devices.</summary>
    Vector,
}

/// <summary>
/// How an <see cref="OpenClBackend"/> maps work onto its device. Every choice is correct on every
/// device; the defaults are the fast ones for the device type.
/// </summary>
/// <param name="Gemm">The GEMM kernel.</param>
/// <param name="MaxTiledGemmSide">Cap on the tiled GEMM's work-group side (16, 8, 4, 2 or 1); the device's limit applies too.</param>
/// <param name="RowGroupCap">Cap on the work-group size of row reductions (layernorm, softmax, cross-entropy).</param>
internal readonly record struct OpenClTuning(GemmKernel Gemm, int MaxTiledGemmSide, int RowGroupCap)
{
    /// <summary>GPUs: tiled GEMM, 256 work-items reduce a row in local memory.</summary>
    public static OpenClTuning Gpu => new(GemmKernel.Tiled, 16, 256);

    /// <summary>
    /// CPU devices: the register-blocked GEMM, and one work-item per row, because PoCL runs a group's
    /// items as loops split at every barrier (layernorm forward at N=2048, C=384: 7-19 ms with 256 items
    /// per row, 0.7-1.7 ms with 1).
    /// </summary>
    public static OpenClTuning Cpu => new(GemmKernel.Vector, 16, 1);

    public static OpenClTuning For(string deviceType) => deviceType == "CPU" ? Cpu : Gpu;
}
