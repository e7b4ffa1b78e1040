using FedLora.Kernels.Host;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// The default backend: managed SIMD (Vector512, falling back to Vector256, Vector128 and scalar)
/// over all cores, with packed, register-blocked GEMM micro-kernels.
/// </summary>
/// <remarks>
/// While the backend is being built it derives from <see cref="ReferenceBackend"/> so that every op
/// exists; each family overrides its ops in its own file (CpuBackend.Family.cs).
/// </remarks>
public partial class CpuBackend : ReferenceBackend
{
    /// <inheritdoc/>
    public override string Name => "cpu";

    /// <inheritdoc/>
    public override string Description =>
        $"managed SIMD ({SimdWidth.Describe()}) on {CpuParallel.ThreadCount} thread(s)";

    /// <inheritdoc/>
    protected override DeviceBuffer AllocateCore(int length) => new HostBuffer(this, length);

    /// <inheritdoc/>
    protected override void UploadCore(ReadOnlySpan<float> source, BufferView destination) => source.CopyTo(destination.Span());

    /// <inheritdoc/>
    protected override void DownloadCore(BufferView source, Span<float> destination) => source.Span().CopyTo(destination);
}
