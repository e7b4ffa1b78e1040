using FedLora.Lora;

namespace FedLora.Federation.Tests;

/// <summary>Tiny modules, hand-made updates and dense reference products for the strategy tests.</summary>
internal static class Fixtures
{
    /// <summary>A 2x2 layer: small enough to write every product by hand.</summary>
    public static readonly LoraModuleSpec Tiny = new("tiny", InFeatures: 2, OutFeatures: 2);

    public static LoraModuleSpec[] One(LoraModuleSpec module) => [module];

    public static SampledClient Client(int id, int examples, int rank) => new(id, examples, ClientBudget.OfRank(rank));

    public static SampledClient RatioClient(int id, int examples, double ratio) => new(id, examples, ClientBudget.OfRatio(ratio));

    /// <summary>A one-module update of client <paramref name="assignment"/> with the given factors.</summary>
    public static ClientUpdate Update(ClientAssignment assignment, float[]? a, float[] b, int? rank = null) =>
        new(assignment.ClientId, assignment.Round, rank ?? assignment.Rank,
            [new ModuleUpdate(assignment.Modules[0], a, b, assignment.RankIndices?[0])]);

    /// <summary>An update that sends the start back plus <paramref name="change"/> on every value of A and B.</summary>
    public static ClientUpdate Shifted(ClientAssignment assignment, float change) =>
        new(assignment.ClientId, assignment.Round, assignment.Rank,
            assignment.Start.Select((start, m) => new ModuleUpdate(start.Module,
                assignment.Trainable == TrainableFactors.BOnly ? null : start.A.Select(x => x + change).ToArray(),
                start.B.Select(x => x + change).ToArray(), assignment.RankIndices?[m])).ToArray());

    /// <summary>An update with random factors of the assigned rank, drawn from <paramref name="random"/>.</summary>
    public static ClientUpdate Random(ClientAssignment assignment, Random random) =>
        new(assignment.ClientId, assignment.Round, assignment.Rank,
            assignment.Start.Select((start, m) => new ModuleUpdate(start.Module,
                assignment.Trainable == TrainableFactors.BOnly ? null : Values(random, start.A.Length),
                Values(random, start.B.Length), assignment.RankIndices?[m])).ToArray());

    public static float[] Values(Random random, int count)
    {
        var values = new float[count];
        for (var i = 0; i < count; i++) values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    /// <summary>coefficient B A in double, B (O,r), A (r,C): the dense reference, (O,C) row-major.</summary>
    public static double[] Product(float[] b, float[] a, int rank, int inFeatures, int outFeatures, double coefficient = 1)
    {
        var product = new double[outFeatures * inFeatures];
        for (var o = 0; o < outFeatures; o++)
        {
            for (var c = 0; c < inFeatures; c++)
            {
                double sum = 0;
                for (var j = 0; j < rank; j++) sum += (double)b[o * rank + j] * a[j * inFeatures + c];
                product[o * inFeatures + c] = coefficient * sum;
            }
        }
        return product;
    }

    public static double[] Product(HostAdapter adapter, double coefficient = 1) =>
        Product(adapter.B, adapter.A, adapter.Rank, adapter.Module.InFeatures, adapter.Module.OutFeatures, coefficient);

    /// <summary>B diag(w) A of a stacked update, in double.</summary>
    public static double[] Product(StackedUpdate update)
    {
        var (c, o, r) = (update.Module.InFeatures, update.Module.OutFeatures, update.Rank);
        var product = new double[o * c];
        for (var i = 0; i < o; i++)
        {
            for (var col = 0; col < c; col++)
            {
                double sum = 0;
                for (var j = 0; j < r; j++) sum += (double)update.B[i * r + j] * update.RowWeights[j] * update.A[j * c + col];
                product[i * c + col] = sum;
            }
        }
        return product;
    }

    public static double[] Add(double[] x, double[] y) => x.Zip(y, (a, b) => a + b).ToArray();

    public static double[] Subtract(double[] x, double[] y) => x.Zip(y, (a, b) => a - b).ToArray();

    public static double FrobeniusNorm(double[] x) => Math.Sqrt(x.Sum(v => v * v));

    /// <summary>Asserts |expected - actual| &lt;= tolerance (1 + |expected|) elementwise, naming the first mismatch.</summary>
    public static void AssertClose(IReadOnlyList<double> expected, IReadOnlyList<double> actual, double tolerance, string label)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance * (1 + Math.Abs(expected[i])),
                $"{label}: [{i}] expected {expected[i]}, got {actual[i]}");
        }
    }

    public static void AssertClose(IReadOnlyList<double> expected, IReadOnlyList<float> actual, double tolerance, string label) =>
        AssertClose(expected, actual.Select(x => (double)x).ToArray(), tolerance, label);
}

/// <summary>Every strategy by name, with clients each can take, for tests that hold for all of them.</summary>
internal static class AllStrategies
{
    public static readonly LoraModuleSpec[] Modules = [new("wide", InFeatures: 6, OutFeatures: 4), new("tall", InFeatures: 4, OutFeatures: 7)];

    public static TheoryData<string> Names => ["fslora", "flora", "fedit", "zero-padding", "hetlora", "flexlora", "ffa-lora"];

    public static IFederatedStrategy Create(string name, int rank = 3)
    {
        var settings = new LoraSettings(rank, Alpha: 2 * rank);
        return name switch
        {
            "fslora" => new FsLoraStrategy(Modules, settings),
            "flora" => new FLoraStrategy(Modules, settings),
            "fedit" => new FedItStrategy(Modules, settings),
            "zero-padding" => new ZeroPaddingStrategy(Modules, settings),
            "hetlora" => new HetLoraStrategy(Modules, settings),
            "flexlora" => new FlexLoraStrategy(Modules, settings),
            "ffa-lora" => new FfaLoraStrategy(Modules, settings),
            _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown strategy"),
        };
    }

    /// <summary>Three clients with different n_k: homogeneous ranks for FedIT and FFA-LoRA, heterogeneous otherwise.</summary>
    public static SampledClient[] Clients(IFederatedStrategy strategy)
    {
        var r = strategy.Settings.Rank;
        int[] ranks = strategy is FedItStrategy or FfaLoraStrategy ? [r, r, r] : [1, r, 2];
        return ranks.Select((rank, id) => Fixtures.Client(id, 3 + 2 * id, rank)).ToArray();
    }

    /// <summary>Runs <paramref name="rounds"/> rounds with random client updates, all from one seed.</summary>
    public static GlobalState Run(IFederatedStrategy strategy, int rounds, int seed)
    {
        var random = new Random(seed);
        var state = strategy.Initialize(random);
        for (var round = 0; round < rounds; round++)
        {
            var plan = strategy.ConfigureRound(round, state, Clients(strategy), random);
            state = strategy.Aggregate(plan, state, plan.Assignments.Select(assignment => Fixtures.Random(assignment, random)).ToArray()).State;
        }
        return state;
    }
}
