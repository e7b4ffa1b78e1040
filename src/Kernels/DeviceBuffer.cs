namespace FedLora.Kernels;

/// <summary>
/// A block of float32 memory owned by one <see cref="Backend"/>. Ops never take buffers
/// directly: they take <see cref="BufferView"/>s, windows into a buffer, so that a model can keep
/// all its weights in one buffer (llm.c's layout) and hand each op its slice.
/// </summary>
public abstract class DeviceBuffer : IDisposable
{
    /// <summary>Creates a buffer of <paramref name="length"/> floats owned by <paramref name="backend"/>.</summary>
    protected DeviceBuffer(Backend backend, int length)
    {
        Backend = backend;
        Length = length;
    }

    /// <summary>The backend that allocated this buffer; only its ops may use it.</summary>
    public Backend Backend { get; }

    /// <summary>Number of float32 elements.</summary>
    public int Length { get; }

    /// <summary>True once <see cref="Dispose()"/> has run; a disposed buffer may not be used.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>A view of the whole buffer.</summary>
    public BufferView All => new(this, 0, Length);

    /// <summary>A view of <paramref name="length"/> floats starting at <paramref name="offset"/>.</summary>
    public BufferView View(int offset, int length)
    {
        if (offset < 0 || length < 0 || (long)offset + length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"view [{offset}, {(long)offset + length}) does not fit in a buffer of {Length} floats");
        }
        return new BufferView(this, offset, length);
    }

    /// <summary>The whole buffer as a view.</summary>
    public static implicit operator BufferView(DeviceBuffer buffer) => buffer.All;

    /// <summary>Releases the memory.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Release();
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the backend's memory; called once.</summary>
    protected abstract void Release();
}

/// <summary>
/// A window of <see cref="Length"/> floats at <see cref="Offset"/> in a <see cref="DeviceBuffer"/>:
/// the (buffer, offset, shape) view every op takes. The shape itself is given to the op as
/// dimensions; the op checks that the view holds exactly the product of them.
/// </summary>
public readonly record struct BufferView(DeviceBuffer Buffer, int Offset, int Length)
{
    /// <summary>A sub-view relative to this one.</summary>
    public BufferView Slice(int offset, int length)
    {
        if (offset < 0 || length < 0 || (long)offset + length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset),
                $"slice [{offset}, {(long)offset + length}) does not fit in a view of {Length} floats");
        }
        return new BufferView(Buffer, Offset + offset, length);
    }

    /// <summary>The view from <paramref name="offset"/> to the end of this view.</summary>
    public BufferView Slice(int offset) => Slice(offset, Length - offset);
}
