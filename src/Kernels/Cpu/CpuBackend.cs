using FedLora.Kernels.Host;

namespace FedLora.Kernels.Cpu;

/// <summary>
/// The default backend: managed SIMD (Vector512, falling back to Vector256, Vector128 and scalar)
/// over all cores, with packed, register-blocked GEMM micro-kernels.
/// </summary>
/// <remarks>
/// It derives from <see cref="Backend"/> alone and implements every op itself, one family per file
/// (CpuBackend.Family.cs), so that an op it lacked could not pass the conformance suite by running
/// the Reference code it is compared with (BackendStructureTests checks this).
/// </remarks>
public partial class CpuBackend : Backend
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
