namespace FedLora.Model.Tests;

public class SamplerTests
{
    private static readonly float[] Logits = [0.1f, 2.0f, -1.0f, 1.5f, 0.0f];

    [Fact]
    public void Next_TemperatureZero_ReturnsArgmax()
    {
        var sampler = new Sampler(temperature: 0, topK: 0, seed: 1);
        Assert.Equal(1, sampler.Next(Logits));
    }

    [Fact]
    public void Next_TopKTwo_DrawsOnlyTheTwoLikeliest()
    {
        var sampler = new Sampler(temperature: 1, topK: 2, seed: 2);
        var counts = new int[Logits.Length];
        for (var i = 0; i < 4000; i++) counts[sampler.Next(Logits)]++;
        Assert.Equal(0, counts[0] + counts[2] + counts[4]);
        // p(1)/p(3) = exp(0.5) = 1.65 under softmax restricted to {1, 3}.
        var ratio = (double)counts[1] / counts[3];
        Assert.InRange(ratio, 1.45, 1.85);
    }

    private static int[] Draws(int seed)
    {
        var sampler = new Sampler(0.8f, 0, seed);
        return [.. Enumerable.Range(0, 50).Select(_ => sampler.Next(Logits))];
    }

    [Fact]
    public void Next_SameSeed_SameDraws()
    {
        Assert.Equal(Draws(3), Draws(3));
    }

    [Fact]
    public void Next_AnotherSeed_OtherDraws()
    {
        // 50 draws over 5 tokens: two seeds agree everywhere with a negligible probability, so the
        // sequences of seeds 3..7 must be pairwise different for a sampler that uses its seed.
        var sequences = Enumerable.Range(3, 5).Select(Draws).ToList();
        for (var i = 0; i < sequences.Count; i++)
        {
            for (var j = i + 1; j < sequences.Count; j++)
            {
                Assert.False(sequences[i].SequenceEqual(sequences[j]), $"seeds {3 + i} and {3 + j} drew the same 50 tokens");
            }
        }
    }

    [Fact]
    public void Constructor_NegativeTemperature_Throws()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(-1, 0, 0));
        Assert.Contains("temperature", error.Message, StringComparison.Ordinal);
    }
}
