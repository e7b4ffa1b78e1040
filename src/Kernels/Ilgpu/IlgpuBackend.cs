using System.Globalization;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace FedLora.Kernels.Ilgpu;

/// <summary>
/// Runs FedLora's op set as ILGPU kernels written in C#, on one ILGPU accelerator: an NVIDIA GPU
/// through CUDA (<c>cuda</c>), an OpenCL 2.0 device (<c>opencl</c>), or ILGPU's CPU accelerator
/// (<c>ilgpu-cpu</c>, the correctness target CI runs; not for speed). Each kernel family (Vector,
/// Matmul, LayerNorm, Gelu, Residual, Attention, Embedding, CrossEntropy, Optimizers) is one file of
/// static kernel methods, index first, loaded once per backend on first use and kept.
/// </summary>
/// <remarks>
/// <para>Ops are launched on the accelerator's default stream and may return before the device
/// finishes; <see cref="Backend.Download"/> and <see cref="Backend.SumOfSquares"/> wait for their
/// result, and <see cref="Backend.Synchronize"/> waits for everything.</para>
/// <para>One backend may be called from several threads: each op holds the backend's lock while it
/// launches, because the stream and the scratch buffers are shared.</para>
/// <para>Host-side inputs (token ids, targets, rank indices, row weights) are copied into scratch
/// buffers that grow on demand and are reused.</para>
/// </remarks>
public sealed partial class IlgpuBackend : Backend
{
    private readonly Lock _gate = new();
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly Scratch<int> _intScratch;
    private readonly Scratch<float> _floatScratch;
    private readonly Scratch<double> _doubleScratch;
    private bool _disposed;

    private IlgpuBackend(Context context, Accelerator accelerator, string name)
    {
        _context = context;
        _accelerator = accelerator;
        Name = name;
        _intScratch = new Scratch<int>(accelerator);
        _floatScratch = new Scratch<float>(accelerator);
        _doubleScratch = new Scratch<double>(accelerator);
    }

    /// <summary>
    /// Opens the accelerator named by <paramref name="device"/>: <c>ilgpu-cpu</c>, <c>cuda</c>,
    /// <c>cuda:N</c>, <c>opencl</c> or <c>opencl:N</c> (N as <see cref="IlgpuDevices.List"/> numbers them).
    /// </summary>
    /// <exception cref="IlgpuDeviceException">No such device here; the message says which exist and what to install.</exception>
    public static IlgpuBackend Create(string device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var context = IlgpuDevices.CreateContext();
        try
        {
            var (found, name) = IlgpuDevices.Find(context, device);
            var accelerator = found.CreateAccelerator(context);
            return new IlgpuBackend(context, accelerator, name);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public override string Name { get; }

    /// <inheritdoc/>
    public override string Description => string.Create(CultureInfo.InvariantCulture,
        $"ILGPU {_accelerator.AcceleratorType} accelerator: {_accelerator.Name}, {_accelerator.MemorySize >> 20} MiB, "
        + $"groups of up to {_accelerator.MaxNumThreadsPerGroup} threads, warp {_accelerator.WarpSize}");

    /// <summary>The ILGPU accelerator the kernels run on.</summary>
    internal Accelerator Accelerator => _accelerator;

    /// <summary>The largest group an explicitly grouped kernel may use here.</summary>
    internal int MaxGroupSize => _accelerator.MaxNumThreadsPerGroup;

    /// <summary>True for ILGPU's CPU accelerator, which emulates a GPU thread by thread (slow; for correctness).</summary>
    internal bool IsCpuAccelerator => _accelerator is CPUAccelerator;

    /// <inheritdoc/>
    public override void Synchronize()
    {
        lock (_gate) Launch("Synchronize", () => _accelerator.Synchronize());
    }

    // ---------------------------------------------------------------- memory

    /// <inheritdoc/>
    protected override DeviceBuffer AllocateCore(int length)
    {
        lock (_gate)
        {
            var memory = Launch("Allocate", () => _accelerator.Allocate1D<float>(Math.Max(length, 1)));
            var buffer = new IlgpuBuffer(this, memory, length);
            if (length > 0) Launch("Allocate", () => memory.View.SubView(0, length).MemSetToZero(_accelerator.DefaultStream));
            return buffer;
        }
    }

    /// <inheritdoc/>
    protected override void UploadCore(ReadOnlySpan<float> source, BufferView destination)
    {
        if (source.Length == 0) return;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var view = View(destination);
            // Upload is synchronous for the host span: kernels queued before it finish first.
            _accelerator.Synchronize();
            view.CopyFromCPU(source);
        }
    }

    /// <inheritdoc/>
    protected override void DownloadCore(BufferView source, Span<float> destination)
    {
        if (destination.Length == 0) return;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _accelerator.Synchronize();
            View(source).CopyToCPU(destination);
        }
    }

    /// <summary>The device memory behind <paramref name="view"/>, as a dense ILGPU view of its length.</summary>
    internal static ArrayView<float> View(BufferView view) =>
        ((IlgpuBuffer)view.Buffer).Memory.View.SubView(view.Offset, view.Length);

    /// <summary>
    /// The view of an optional operand, or a one-float placeholder that the kernel does not read
    /// (kernels take a flag beside it).
    /// </summary>
    internal ArrayView<float> ViewOrPlaceholder(BufferView? view) => view is { } v ? View(v) : _floatScratch.Placeholder;

    /// <summary>Copies host ints (tokens, targets, rank indices) to device scratch, valid until the next op.</summary>
    internal ArrayView<int> UploadInts(ReadOnlySpan<int> values) => _intScratch.Upload(values);

    /// <summary>Copies host floats (row weights, coefficients) to device scratch, valid until the next op.</summary>
    internal ArrayView<float> UploadFloats(ReadOnlySpan<float> values) => _floatScratch.Upload(values);

    /// <summary>Device scratch of <paramref name="length"/> doubles (partial sums), valid until the next op.</summary>
    internal ArrayView<double> DoubleScratch(int length) => _doubleScratch.Get(length);

    /// <summary>Device scratch of <paramref name="length"/> floats, valid until the next op.</summary>
    internal ArrayView<float> FloatScratch(int length) => _floatScratch.Get(length);

    /// <summary>
    /// Loads a kernel once and keeps it: the first call compiles it for this accelerator; later calls
    /// return the same launcher.
    /// </summary>
    internal TDelegate Kernel<TDelegate>(ref TDelegate? cache, Func<Accelerator, TDelegate> load)
        where TDelegate : class
        => cache ??= Launch("compile", () => load(_accelerator));

    /// <summary>
    /// Runs <paramref name="action"/> and turns an ILGPU failure (a kernel that fails to compile or
    /// launch, an out-of-memory device, a lost driver) into an <see cref="IlgpuDeviceException"/>
    /// naming the op and the device.
    /// </summary>
    internal void Launch(string op, Action action) => Launch(op, () => { action(); return 0; });

    /// <inheritdoc cref="Launch(string, Action)"/>
    internal T Launch<T>(string op, Func<T> action)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        try
        {
            return action();
        }
        catch (Exception e) when (e is AcceleratorException or InternalCompilerException or NotSupportedException
            or InvalidOperationException or OutOfMemoryException)
        {
            throw IlgpuDeviceException.For(op, Name, _accelerator, e);
        }
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (_disposed) return;
        _disposed = true;
        if (disposing)
        {
            _intScratch.Dispose();
            _floatScratch.Dispose();
            _doubleScratch.Dispose();
            _accelerator.Dispose();
            _context.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>A device buffer of one element type that grows on demand and is reused by every op.</summary>
    private sealed class Scratch<T>(Accelerator accelerator) : IDisposable
        where T : unmanaged
    {
        private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

        public ArrayView<T> Placeholder => Get(1);

        public ArrayView<T> Get(int length)
        {
            if (_buffer is null || _buffer.Length < length)
            {
                accelerator.Synchronize();
                _buffer?.Dispose();
                _buffer = accelerator.Allocate1D<T>(Math.Max(length, 64));
            }
            return _buffer.View.SubView(0, Math.Max(length, 1));
        }

        public ArrayView<T> Upload(ReadOnlySpan<T> values)
        {
            var view = Get(values.Length);
            // The previous op may still read this scratch.
            accelerator.Synchronize();
            if (values.Length > 0) view.SubView(0, values.Length).CopyFromCPU(values);
            return view;
        }

        public void Dispose() => _buffer?.Dispose();
    }
}

/// <summary>A block of device memory on an ILGPU accelerator.</summary>
internal sealed class IlgpuBuffer(IlgpuBackend backend, MemoryBuffer1D<float, Stride1D.Dense> memory, int length)
    : DeviceBuffer(backend, length)
{
    /// <summary>The accelerator's memory (at least one float, even for an empty buffer).</summary>
    public MemoryBuffer1D<float, Stride1D.Dense> Memory { get; } = memory;

    protected override void Release() => Memory.Dispose();
}
