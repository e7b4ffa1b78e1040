using System.Globalization;
using FedLora.Kernels;

namespace FedLora.Bench;

/// <summary>The benchmarks' seeded inputs and their one check of a result against a reference, before timing.</summary>
internal static class BenchData
{
    /// <summary><paramref name="length"/> values uniform in [-range, range).</summary>
    public static float[] Values(Random rng, int length, float range = 1f)
    {
        var values = new float[length];
        for (var i = 0; i < length; i++) values[i] = (float)((rng.NextDouble() * 2 - 1) * range);
        return values;
    }

    /// <summary>A buffer on <paramref name="backend"/> holding <paramref name="values"/>.</summary>
    public static DeviceBuffer Upload(Backend backend, float[] values)
    {
        var buffer = backend.Allocate(values.Length);
        backend.Upload(values, buffer);
        return buffer;
    }

    /// <summary>Throws, naming the first element, unless |actual - expected| &lt;= absolute + relative |expected| everywhere.</summary>
    public static void AssertClose(string what, float[] expected, float[] actual, float absolute, float relative)
    {
        for (var i = 0; i < expected.Length; i++)
        {
            if (!(Math.Abs(expected[i] - actual[i]) <= absolute + relative * Math.Abs(expected[i])))
            {
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
                    $"{what}[{i}] is {actual[i]:G9}, the reference gives {expected[i]:G9}"));
            }
        }
    }
}
