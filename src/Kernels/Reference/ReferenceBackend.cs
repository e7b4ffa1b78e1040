using FedLora.Kernels.Host;

namespace FedLora.Kernels.Reference;

/// <summary>
/// The truth every other backend is tested against: naive scalar loops, written to be obviously
/// right and never optimised. Accumulations run in double so that the reference is the more
/// accurate side of every comparison.
/// </summary>
/// <remarks>Sealed: a fast backend derives from <see cref="Backend"/> and implements every op itself,
/// so that it cannot pass the conformance suite by inheriting the code it is compared with.</remarks>
public sealed partial class ReferenceBackend : Backend
{
    /// <inheritdoc/>
    public override string Name => "reference";

    /// <inheritdoc/>
    public override string Description => "naive scalar C# (the reference implementation, for tests)";

    /// <inheritdoc/>
    protected override DeviceBuffer AllocateCore(int length) => new HostBuffer(this, length);

    /// <inheritdoc/>
    protected override void UploadCore(ReadOnlySpan<float> source, BufferView destination) => source.CopyTo(destination.Span());

    /// <inheritdoc/>
    protected override void DownloadCore(BufferView source, Span<float> destination) => source.Span().CopyTo(destination);

    /// <inheritdoc/>
    protected override void FillCore(BufferView x, float value)
    {
        var xs = x.Span();
        for (var i = 0; i < xs.Length; i++) xs[i] = value;
    }

    /// <inheritdoc/>
    protected override void CopyCore(BufferView source, BufferView destination)
    {
        var s = source.Span();
        var d = destination.Span();
        for (var i = 0; i < s.Length; i++) d[i] = s[i];
    }

    /// <inheritdoc/>
    protected override void ScaleCore(float alpha, BufferView x)
    {
        var xs = x.Span();
        for (var i = 0; i < xs.Length; i++) xs[i] *= alpha;
    }

    /// <inheritdoc/>
    protected override void AxpyCore(float alpha, BufferView x, BufferView y)
    {
        var xs = x.Span();
        var ys = y.Span();
        for (var i = 0; i < xs.Length; i++) ys[i] += alpha * xs[i];
    }

    /// <inheritdoc/>
    protected override void WeightedSumCore(ReadOnlySpan<BufferView> sources, ReadOnlySpan<float> weights, BufferView destination)
    {
        var d = destination.Span();
        for (var i = 0; i < d.Length; i++)
        {
            double sum = 0;
            for (var k = 0; k < sources.Length; k++) sum += (double)weights[k] * sources[k].Span()[i];
            d[i] = (float)sum;
        }
    }

    /// <inheritdoc/>
    protected override double SumOfSquaresCore(BufferView x)
    {
        double sum = 0;
        foreach (var value in x.Span()) sum += (double)value * value;
        return sum;
    }
}
