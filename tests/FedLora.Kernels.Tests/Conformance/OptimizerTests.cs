namespace FedLora.Kernels.Tests.Conformance;

/// <summary>AdamW and SGD on every backend under test, against the Reference, with and without a mask.</summary>
public class OptimizerTests
{
    public static TheoryData<string, int, bool> LengthsAndMasks()
    {
        var data = new TheoryData<string, int, bool>();
        foreach (var backend in TestBackends.Names)
        {
            foreach (var masked in new[] { false, true })
            {
                for (var length = 0; length <= 67; length++) data.Add(backend, length, masked);
                foreach (var length in new[] { 129, 1000, 65_537 }) data.Add(backend, length, masked);
            }
        }
        return data;
    }

    /// <summary>A mask of zeros (both signs) and non-zeros (not only 1: any non-zero value keeps the element).</summary>
    private static TwinTensor? Mask(Twin twin, int length, bool masked)
    {
        if (!masked) return null;
        float[] choices = [0f, -0f, 1f, 0.5f];
        return twin.Tensor(Enumerable.Range(0, length).Select(_ => choices[twin.Rng.Next(choices.Length)]).ToArray());
    }

    [Theory, MemberData(nameof(LengthsAndMasks))]
    public void AdamW_ThreeSteps_MatchesReference(string backend, int length, bool masked)
    {
        using var twin = new Twin(backend);
        var mask = Mask(twin, length, masked);
        var parameters = twin.Random(length);
        var m = twin.Random(length, 0.1f);
        var v = twin.Tensor(twin.RandomValues(length, 0.01f).Select(MathF.Abs).ToArray());
        var before = twin.Device.ToArray(parameters.Device);
        var settings = new AdamWSettings(LearningRate: 1e-2f, WeightDecay: 0.1f);
        foreach (var timestep in new[] { 1, 2, 1000 })
        {
            var grads = twin.Random(length);
            twin.Run((k, s) => k.AdamW(settings, timestep, s(grads), mask is null ? null : s(mask), s(parameters), s(m), s(v)));
        }
        twin.AssertClose(parameters, 1e-6f, 1e-6f, "parameters");
        twin.AssertClose(m, 1e-6f, 1e-6f, "m");
        twin.AssertClose(v, 1e-7f, 1e-6f, "v");
        if (mask is not null) AssertMaskedUntouched(twin, mask, before, parameters);
    }

    [Theory, MemberData(nameof(LengthsAndMasks))]
    public void Sgd_TwoSteps_MatchesReference(string backend, int length, bool masked)
    {
        using var twin = new Twin(backend);
        var mask = Mask(twin, length, masked);
        var parameters = twin.Random(length);
        var before = twin.Device.ToArray(parameters.Device);
        foreach (var (learningRate, weightDecay) in new[] { (0.1f, 0f), (0.03f, 0.5f) })
        {
            var grads = twin.Random(length);
            twin.Run((k, s) => k.Sgd(learningRate, weightDecay, s(grads), mask is null ? null : s(mask), s(parameters)));
        }
        twin.AssertClose(parameters, 1e-6f, 1e-6f, "parameters");
        if (mask is not null) AssertMaskedUntouched(twin, mask, before, parameters);
    }

    private static void AssertMaskedUntouched(Twin twin, TwinTensor mask, float[] before, TwinTensor parameters)
    {
        var keep = twin.Device.ToArray(mask.Device);
        var after = twin.Device.ToArray(parameters.Device);
        for (var i = 0; i < keep.Length; i++)
        {
            if (keep[i] == 0f) Assert.True(before[i] == after[i], $"{twin.Device.Name}: parameter [{i}] under a zero mask moved from {before[i]} to {after[i]}");
            else Assert.True(before[i] != after[i], $"{twin.Device.Name}: parameter [{i}] under mask {keep[i]} did not move");
        }
    }
}
