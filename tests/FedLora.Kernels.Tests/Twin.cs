using System.Globalization;
using System.Text;

namespace FedLora.Kernels.Tests;

/// <summary>A tensor held twice: once on the Reference backend, once on the backend under test.</summary>
public sealed class TwinTensor(BufferView reference, BufferView device)
{
    public BufferView Reference { get; } = reference;
    public BufferView Device { get; } = device;
    public int Length => Reference.Length;
}

/// <summary>
/// Runs one op on Reference and on a backend under test from identical inputs, then compares the
/// outputs with tolerance abs + rel * |reference| and reports the first mismatching index.
/// </summary>
public sealed class Twin : IDisposable
{
    private readonly List<DeviceBuffer> _buffers = [];

    public Twin(string backendName, int seed = 1234)
    {
        Device = TestBackends.Get(backendName);
        Rng = new Random(seed);
    }

    public Backend Reference { get; } = TestBackends.Get("reference");
    public Backend Device { get; }
    public Random Rng { get; }

    /// <summary>A twin tensor holding <paramref name="values"/> on both sides.</summary>
    public TwinTensor Tensor(float[] values)
    {
        var r = Reference.Allocate(values.Length);
        var d = Device.Allocate(values.Length);
        _buffers.Add(r);
        _buffers.Add(d);
        Reference.Upload(values, r);
        Device.Upload(values, d);
        return new TwinTensor(r, d);
    }

    /// <summary>A twin tensor of uniform values in [-scale, scale).</summary>
    public TwinTensor Random(int length, float scale = 1f) => Tensor(RandomValues(length, scale));

    /// <summary>A twin tensor of zeros.</summary>
    public TwinTensor Zeros(int length) => Tensor(new float[length]);

    /// <summary>
    /// A twin tensor of NaNs: the garbage an overwriting op must not read, nor leave anywhere (a NaN
    /// left on the device side where the reference wrote a number fails <see cref="AssertClose(TwinTensor, float, float, string)"/>).
    /// </summary>
    public TwinTensor NaNs(int length) => Tensor(Enumerable.Repeat(float.NaN, length).ToArray());

    public float[] RandomValues(int length, float scale = 1f)
    {
        var values = new float[length];
        for (var i = 0; i < length; i++) values[i] = (float)((Rng.NextDouble() * 2 - 1) * scale);
        return values;
    }

    /// <summary>Asserts that the device side matches the reference side element by element.</summary>
    public void AssertClose(TwinTensor tensor, float abs, float rel, string label)
    {
        var expected = Reference.ToArray(tensor.Reference);
        var actual = Device.ToArray(tensor.Device);
        AssertClose(expected, actual, abs, rel, $"{Device.Name}: {label}");
    }

    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, float abs, float rel, string label)
    {
        Assert.True(expected.Length == actual.Length, $"{label}: length {actual.Length}, expected {expected.Length}");
        var mismatches = 0;
        var first = -1;
        var maxDiff = 0.0;
        for (var i = 0; i < expected.Length; i++)
        {
            var diff = Math.Abs((double)expected[i] - actual[i]);
            if (double.IsNaN(diff) && !(float.IsNaN(expected[i]) && float.IsNaN(actual[i]))) diff = double.PositiveInfinity;
            if (double.IsNaN(diff)) continue;
            maxDiff = Math.Max(maxDiff, diff);
            if (diff > abs + rel * Math.Abs(expected[i]))
            {
                if (first < 0) first = i;
                mismatches++;
            }
        }
        if (first >= 0)
        {
            var message = new StringBuilder()
                .Append(CultureInfo.InvariantCulture, $"{label}: {mismatches} of {expected.Length} elements differ; first at [{first}]: ")
                .Append(CultureInfo.InvariantCulture, $"expected {expected[first]:R}, got {actual[first]:R} (tolerance {abs} + {rel}*|ref|); max |diff| {maxDiff:G4}")
                .ToString();
            Assert.Fail(message);
        }
    }

    public void Dispose()
    {
        foreach (var buffer in _buffers) buffer.Dispose();
    }
}
