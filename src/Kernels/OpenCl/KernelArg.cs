using static FedLora.Kernels.OpenCl.Native.NativeMethods;

namespace FedLora.Kernels.OpenCl;

/// <summary>
/// One argument of a kernel launch, so that a launch reads as one call with its arguments in the
/// kernel's order and allocates nothing. A <see cref="BufferView"/> fills two kernel parameters:
/// the buffer and the view's offset in floats (the .cl signatures take <c>__global float* x, int xo</c>).
/// </summary>
internal readonly struct KernelArg
{
    private enum Kind : byte
    {
        Int,
        Float,
        Memory,
        View,
        Local,
    }

    private readonly Kind _kind;
    private readonly int _int;
    private readonly float _float;
    private readonly nint _memory;

    private KernelArg(Kind kind, int intValue, float floatValue, nint memory)
    {
        _kind = kind;
        _int = intValue;
        _float = floatValue;
        _memory = memory;
    }

    public static implicit operator KernelArg(int value) => new(Kind.Int, value, 0, 0);

    public static implicit operator KernelArg(float value) => new(Kind.Float, 0, value, 0);

    public static implicit operator KernelArg(BufferView view) => new(Kind.View, view.Offset, 0, ((OpenClBuffer)view.Buffer).Handle);

    /// <summary>A raw cl_mem (scratch buffers), with its offset in elements: two kernel parameters.</summary>
    public static KernelArg Memory(nint memory, int offset) => new(Kind.View, offset, 0, memory);

    /// <summary>A raw cl_mem alone: one kernel parameter.</summary>
    public static KernelArg Memory(nint memory) => new(Kind.Memory, 0, 0, memory);

    /// <summary>A <c>__local</c> array of <paramref name="bytes"/> bytes.</summary>
    public static KernelArg Local(int bytes) => new(Kind.Local, bytes, 0, 0);

    /// <summary>The same view <paramref name="floats"/> further into its buffer (a view argument only).</summary>
    public KernelArg Advance(int floats) =>
        _kind == Kind.View ? new(Kind.View, _int + floats, 0, _memory) : throw new InvalidOperationException("only a view argument has an offset");

    /// <summary>Sets this argument at <paramref name="index"/> and returns the index of the next one.</summary>
    public unsafe uint Set(OpenClKernel kernel, uint index)
    {
        var handle = kernel.Handle;
        switch (_kind)
        {
            case Kind.Int:
                {
                    var value = _int;
                    Verify(clSetKernelArg(handle, index, sizeof(int), &value), kernel, index);
                    return index + 1;
                }
            case Kind.Float:
                {
                    var value = _float;
                    Verify(clSetKernelArg(handle, index, sizeof(float), &value), kernel, index);
                    return index + 1;
                }
            case Kind.Memory:
                {
                    var memory = _memory;
                    Verify(clSetKernelArg(handle, index, (nuint)sizeof(nint), &memory), kernel, index);
                    return index + 1;
                }
            case Kind.View:
                {
                    var memory = _memory;
                    var offset = _int;
                    Verify(clSetKernelArg(handle, index, (nuint)sizeof(nint), &memory), kernel, index);
                    Verify(clSetKernelArg(handle, index + 1, sizeof(int), &offset), kernel, index + 1);
                    return index + 2;
                }
            default:
                Verify(clSetKernelArg(handle, index, (nuint)_int, null), kernel, index);
                return index + 1;
        }
    }

    // The function name is only formatted on failure: setting arguments is on every launch's path.
    private static void Verify(int status, OpenClKernel kernel, uint index)
    {
        if (status != CL_SUCCESS) Check(status, $"{nameof(clSetKernelArg)} ({kernel.Name}, argument {index})");
    }
}
