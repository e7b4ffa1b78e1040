using FedLora.Kernels.Reference;
using FedLora.Lora;
using MathNet.Numerics.LinearAlgebra;
using static FedLora.Federation.Tests.Fixtures;

namespace FedLora.Federation.Tests;

public sealed class AlgebraTests
{
    [Fact]
    public void Fresh_SameGenerator_EqualsAdapterSetInitialize()
    {
        LoraModuleSpec[] modules = [new("a", 5, 3), new("b", 4, 6)];
        using var backend = new ReferenceBackend();
        using var adapters = new AdapterSet(backend, modules, rank: 2, alpha: 4, LoraScaling.Standard);
        adapters.Initialize(new Random(17));

        var fresh = HostAdapter.Fresh(modules, 2, new Random(17));

        for (var m = 0; m < modules.Length; m++)
        {
            Assert.Equal(backend.ToArray(adapters.Adapters[m].A), fresh[m].A);
            Assert.Equal(backend.ToArray(adapters.Adapters[m].B), fresh[m].B);
        }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(3, 7, 5)]
    [InlineData(6, 4, 9)]
    public void ProductFrobeniusNorm_RandomFactors_EqualsNormOfDenseProduct(int rank, int c, int o)
    {
        var random = new Random(rank * 100 + c);
        var a = Values(random, rank * c);
        var b = Values(random, o * rank);

        var norm = LowRank.ProductFrobeniusNorm(a, b, rank, c, o);

        Assert.Equal(FrobeniusNorm(Product(b, a, rank, c, o)), norm, 10);
    }

    [Fact]
    public void Truncate_ThenPad_KeepsTheFirstRanks()
    {
        var module = new LoraModuleSpec("m", 3, 4);
        var adapter = new HostAdapter(module, 3, Values(new Random(1), 9), Values(new Random(2), 12));

        var truncated = LowRank.Truncate(adapter, 2);
        var padded = new AdapterAccumulator(module, 3);
        padded.AddPadded(truncated.A, truncated.B, 2, 1);
        var back = padded.ToAdapter();

        Assert.Equal(adapter.A.AsSpan(0, 6).ToArray(), back.A.AsSpan(0, 6).ToArray());
        Assert.Equal([0f, 0f, 0f], back.A.AsSpan(6).ToArray());
        for (var o = 0; o < 4; o++)
        {
            Assert.Equal(adapter.B[o * 3], back.B[o * 3]);
            Assert.Equal(adapter.B[o * 3 + 1], back.B[o * 3 + 1]);
            Assert.Equal(0f, back.B[o * 3 + 2]);
        }
    }

    [Theory]
    [InlineData(9, 7, 3, true)]
    [InlineData(5, 8, 1, true)]
    [InlineData(4, 3, 5, false)]
    [InlineData(6, 6, 6, false)]
    public void FactoredSvd_RandomProduct_MatchesDenseSvd(int o, int c, int rank, bool viaQr)
    {
        var random = new Random(o * 31 + c * 7 + rank);
        var b = Values(random, o * rank);
        var a = Values(random, rank * c);
        var w = Values(random, rank);

        var svd = viaQr ? FactoredSvd.ViaQr(o, c, rank, b, a, w) : FactoredSvd.Dense(o, c, rank, b, a, w);

        var product = Matrix<double>.Build.DenseOfRowMajor(o, c, DenseProduct(o, c, rank, b, a, w));
        var reference = product.Svd(computeVectors: true).S;
        var k = Math.Min(rank, Math.Min(o, c));
        Assert.Equal(k, svd.Rank);
        for (var j = 0; j < k; j++) Assert.Equal(reference[j], svd.Sigma[j], 10);
        var rebuilt = new double[o * c];
        for (var i = 0; i < o; i++)
        {
            for (var col = 0; col < c; col++)
            {
                for (var j = 0; j < k; j++) rebuilt[i * c + col] += svd.U[i * k + j] * svd.Sigma[j] * svd.V[col * k + j];
            }
        }
        AssertClose(DenseProduct(o, c, rank, b, a, w), rebuilt, 1e-10, "U Sigma V^T");
        AssertOrthonormalColumns(svd.U, o, k);
        AssertOrthonormalColumns(svd.V, c, k);
    }

    internal static double[] DenseProduct(int o, int c, int rank, float[] b, float[] a, float[] w)
    {
        var product = new double[o * c];
        for (var i = 0; i < o; i++)
        {
            for (var col = 0; col < c; col++)
            {
                for (var j = 0; j < rank; j++) product[i * c + col] += (double)b[i * rank + j] * w[j] * a[j * c + col];
            }
        }
        return product;
    }

    private static void AssertOrthonormalColumns(double[] x, int rows, int k)
    {
        for (var i = 0; i < k; i++)
        {
            for (var j = 0; j < k; j++)
            {
                double dot = 0;
                for (var row = 0; row < rows; row++) dot += x[row * k + i] * x[row * k + j];
                Assert.Equal(i == j ? 1 : 0, dot, 10);
            }
        }
    }
}
