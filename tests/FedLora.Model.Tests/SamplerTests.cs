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

    [Fact]
    public void Next_SameSeed_SameDraws()
    {
        var a = new Sampler(0.8f, 0, seed: 3);
        var b = new Sampler(0.8f, 0, seed: 3);
        for (var i = 0; i < 50; i++) Assert.Equal(a.Next(Logits), b.Next(Logits));
    }

    [Fact]
    public void Constructor_NegativeTemperature_Throws()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new Sampler(-1, 0, 0));
        Assert.Contains("temperature", error.Message, StringComparison.Ordinal);
    }
}
