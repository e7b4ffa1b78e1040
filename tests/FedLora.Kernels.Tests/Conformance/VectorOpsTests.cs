namespace FedLora.Kernels.Tests.Conformance;

public class VectorOpsTests
{
    // Every length 0..67 walks each SIMD remainder path (16, 8, 4 lanes); the larger ones cross the
    // parallel split.
    public static TheoryData<string, int> Lengths()
    {
        var data = new TheoryData<string, int>();
        foreach (var backend in TestBackends.Names)
        {
            for (var length = 0; length <= 67; length++) data.Add(backend, length);
            foreach (var length in new[] { 129, 1000, 65_537, 1 << 20 }) data.Add(backend, length);
        }
        return data;
    }

    [Theory, MemberData(nameof(Lengths))]
    public void FillCopyScaleAxpy_AnyLength_MatchReference(string backend, int length)
    {
        using var twin = new Twin(backend);
        var x = twin.Random(length);
        var y = twin.Random(length);
        var z = twin.Zeros(length);
        foreach (var side in new[] { (twin.Reference, x.Reference, y.Reference, z.Reference), (twin.Device, x.Device, y.Device, z.Device) })
        {
            var (b, xv, yv, zv) = side;
            b.Fill(zv, 0.5f);
            b.Axpy(-1.75f, xv, zv);
            b.Scale(3f, yv);
            b.Copy(yv, xv);
        }
        twin.AssertClose(z, 1e-6f, 1e-6f, "fill + axpy");
        twin.AssertClose(y, 0, 0, "scale");
        twin.AssertClose(x, 0, 0, "copy");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void WeightedSum_ThreeSources_MatchesReference(string backend, int length)
    {
        using var twin = new Twin(backend);
        var sources = new[] { twin.Random(length), twin.Random(length), twin.Random(length) };
        float[] weights = [0.5f, -0.25f, 0.125f];
        var output = twin.Random(length);
        twin.Reference.WeightedSum(sources.Select(s => s.Reference).ToArray(), weights, output.Reference);
        twin.Device.WeightedSum(sources.Select(s => s.Device).ToArray(), weights, output.Device);
        twin.AssertClose(output, 1e-6f, 1e-6f, "weighted sum");
    }

    [Theory, MemberData(nameof(Lengths))]
    public void SumOfSquares_AnyLength_MatchesReference(string backend, int length)
    {
        using var twin = new Twin(backend);
        var x = twin.Random(length);
        var expected = twin.Reference.SumOfSquares(x.Reference);
        var actual = twin.Device.SumOfSquares(x.Device);
        Assert.True(Math.Abs(expected - actual) <= 1e-6 + 1e-5 * expected, $"{backend}: sum of squares {actual}, expected {expected}");
    }

    public static TheoryData<string, int, int> SourceCounts()
    {
        var data = new TheoryData<string, int, int>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var count in new[] { 0, 1, 2, 12 })
            {
                foreach (var length in new[] { 0, 17, 33, 40_000 }) data.Add(backend, count, length);
            }
        }
        return data;
    }

    [Theory, MemberData(nameof(SourceCounts))]
    public void WeightedSum_AnySourceCount_MatchesReference(string backend, int count, int length)
    {
        using var twin = new Twin(backend);
        var sources = Enumerable.Range(0, count).Select(_ => twin.Random(length)).ToArray();
        var weights = twin.RandomValues(count);
        // Garbage in the destination must be overwritten, with zeros when there is no source.
        var output = twin.Random(length);
        twin.Reference.WeightedSum(sources.Select(s => s.Reference).ToArray(), weights, output.Reference);
        twin.Device.WeightedSum(sources.Select(s => s.Device).ToArray(), weights, output.Device);
        twin.AssertClose(output, 1e-6f * (count + 1), 1e-6f, $"weighted sum of {count}");
    }

    [Theory, MemberData(nameof(TestBackends.All), MemberType = typeof(TestBackends))]
    public void SumOfSquares_LongVector_SameResultEveryCall(string backend)
    {
        // The chunks' partial sums are combined in a fixed order, whichever threads computed them.
        using var twin = new Twin(backend);
        var x = twin.Random(1_000_003, 3f);
        var first = twin.Device.SumOfSquares(x.Device);
        for (var i = 0; i < 20; i++) Assert.Equal(first, twin.Device.SumOfSquares(x.Device));
    }
}
