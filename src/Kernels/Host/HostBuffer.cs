namespace FedLora.Kernels.Host;

/// <summary>
/// Memory of the host backends (Reference and Cpu): a pinned managed array, so that kernels can
/// take raw pointers without pinning per call and the GC never moves it.
/// </summary>
internal sealed class HostBuffer : DeviceBuffer
{
    public HostBuffer(Backend backend, int length) : base(backend, length)
    {
        Data = GC.AllocateArray<float>(length, pinned: true);
    }

    public float[] Data { get; }

    protected override void Release()
    {
        // Managed memory: the GC reclaims it once the buffer is unreachable.
    }
}

internal static class HostViews
{
    /// <summary>The floats behind a host view.</summary>
    public static Span<float> Span(this BufferView view) =>
        ((HostBuffer)view.Buffer).Data.AsSpan(view.Offset, view.Length);

    /// <summary>The floats behind an optional host view; empty when absent.</summary>
    public static Span<float> SpanOrEmpty(this BufferView? view) =>
        view is { } v ? v.Span() : [];
}
