using FedLora.Runtime;
namespace FedLora.Federation.Tests;

public class PartitionerTests
{
    private static readonly string[] Labels = ["a", "b", "c", "d"];
    private static readonly (int Id, string Label)[] Items = Enumerable.Range(0, 400).Select(i => (i, Labels[i % 4])).ToArray();

    [Fact]
    public void Iid_SplitsEveryItemOnceInNearlyEqualParts()
    {
        var parts = Partitioner.Iid(Items, 7, seed: 1);
        Assert.Equal(Items.OrderBy(x => x.Id), parts.SelectMany(p => p).OrderBy(x => x.Id));
        Assert.InRange(parts.Max(p => p.Count) - parts.Min(p => p.Count), 0, 1);
    }

    [Fact]
    public void Dirichlet_SmallAlpha_SkewsLabelsAndKeepsEveryItemOnce()
    {
        var skewed = Partitioner.Dirichlet(Items, x => x.Label, 5, alpha: 0.1, seed: 2);
        var even = Partitioner.Dirichlet(Items, x => x.Label, 5, alpha: 1000, seed: 2);
        Assert.Equal(Items.OrderBy(x => x.Id), skewed.SelectMany(p => p).OrderBy(x => x.Id));
        Assert.All(skewed, p => Assert.NotEmpty(p));
        // The share of a client's largest label: near 1/4 for a large alpha, much larger for a small one.
        static double MeanTopShare(IReadOnlyList<IReadOnlyList<(int, string Label)>> parts) =>
            parts.Average(p => p.GroupBy(x => x.Label).Max(g => g.Count()) / (double)p.Count);
        Assert.True(MeanTopShare(even) < 0.35, $"alpha 1000 top-label share {MeanTopShare(even)}");
        Assert.True(MeanTopShare(skewed) > 0.6, $"alpha 0.1 top-label share {MeanTopShare(skewed)}");
    }

    [Fact]
    public void Dirichlet_SameSeed_SameSplit()
    {
        var a = Partitioner.Dirichlet(Items, x => x.Label, 4, 0.5, seed: 3);
        var b = Partitioner.Dirichlet(Items, x => x.Label, 4, 0.5, seed: 3);
        Assert.Equal(a.Select(p => p.ToArray()), b.Select(p => p.ToArray()));
    }

    [Fact]
    public void Iid_MoreClientsThanItems_Throws()
    {
        var error = Assert.Throws<ArgumentException>(() => Partitioner.Iid(Items.Take(3).ToArray(), 4, 0));
        Assert.Contains("3 examples", error.Message, StringComparison.Ordinal);
    }
}
